"""Recipes: per-method unlearning settings that were measured to work, shipped as data.

A recipe is a YAML file in ``unmem/configs/recipes`` (or any path): shared ``defaults``
and, per method, the settings that differ (rate, epochs, ``method_args``), each with a
comment saying how it was chosen. ``unmem unlearn --recipe NAME`` and an experiment's
``recipe: NAME`` start from it; anything written in a config file, an experiment's
``defaults:``/entry or on the command line overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from unmem.config import StrictLoader
from unmem.errors import UnmemError, input_error
from unmem.io import read_text

MERGED_MAPPINGS = ("method_args", "calibrated_stop")  # merged key by key, not replaced whole


def recipes_dir() -> Path:
    return Path(str(files("unmem") / "configs" / "recipes"))


def shipped_recipes() -> list[str]:
    return sorted(path.stem for path in recipes_dir().glob("*.yaml"))


def merge_settings(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers win; ``method_args`` and ``calibrated_stop`` merge key by key."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key in MERGED_MAPPINGS and isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    description: str
    defaults: dict[str, Any]
    methods: dict[str, dict[str, Any]]

    def settings(self, method: str) -> dict[str, Any]:
        """The recipe's ``UnlearnConfig`` fields for ``method``."""
        if method not in self.methods:
            raise UnmemError(
                f"recipe '{self.name}' ({self.path}) has no settings for method '{method}'; "
                f"it has: {', '.join(sorted(self.methods))}"
            )
        return merge_settings(self.defaults, self.methods[method] or {})


def _mapping(path: Path, data: Any, key: str) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise input_error(path, "expected a mapping", field=key)
    return value


def load_recipe(name: str | Path) -> Recipe:
    """A shipped recipe by name (``unmem recipes`` lists them) or a recipe file by path."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = recipes_dir() / f"{name}.yaml"
        if not path.is_file():
            raise UnmemError(
                f"unknown recipe '{name}'; shipped: {', '.join(shipped_recipes())} (or give a path)"
            )
    elif not path.is_file():
        raise UnmemError(f"{path}: recipe file not found")
    try:
        data = yaml.load(read_text(path), Loader=StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise input_error(path, f"invalid YAML ({exc})", line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise input_error(path, "expected a mapping with `defaults:` and `methods:`")
    unknown = set(data) - {"description", "defaults", "methods"}
    if unknown:
        raise input_error(
            path, "unknown key; known: description, defaults, methods", field=sorted(unknown)[0]
        )
    methods = _mapping(path, data, "methods")
    for method, entry in methods.items():
        if entry is not None and not isinstance(entry, dict):
            raise input_error(path, "expected a mapping of settings", field=f"methods.{method}")
    return Recipe(
        path.stem, path, str(data.get("description", "")), _mapping(path, data, "defaults"), methods
    )
