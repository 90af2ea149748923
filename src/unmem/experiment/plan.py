"""``methods:`` -> the unlearning runs: one per method entry × grid point × seed, each config built.

A list where the config expects one value is a grid axis (``lr: [1e-4, 1e-3]``,
``method_args: {divergence: [kl, tv]}``); what counts as "one value" is the field's type,
checked by pydantic (a list for ``lora_targets: list[str]`` is one value).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from unmem.config import UnlearnConfig
from unmem.errors import UnmemError
from unmem.experiment.config import ConfigError, ExperimentConfig, KeyPath, pydantic_error
from unmem.recipes import Recipe, merge_settings

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
ENTRY_KEYS = ("name", "sequence", "force")  # keys of a method entry besides UnlearnConfig's
# With `requests:`: "continue" honours each request from the version before (EUL fuses its
# layers); "union" unlearns the union of the requests so far from the target every time.
SEQUENCES = ("continue", "union")


@dataclass
class RunPlan:
    """One unlearning run: a method at one grid point and one seed."""

    name: str  # directory name under runs/: <variant>-s<seed>
    variant: str  # <method>[-<gridtag>] (or the entry's `name`): what seeds are averaged over
    method: str
    seed: int
    grid: dict[str, Any]  # the grid values of this point (empty without a grid)
    config: UnlearnConfig
    sweep: str = ""  # the entry's `name` or method: the grid points of one entry form one sweep
    sequence: str = "continue"  # with `requests:`: continue from each version, or "union" (retrain on it)
    force: bool | None = None  # with `requests:`: keep every version of this run (None: `requests.force`)


def _type_error(value: Any, hint: Any) -> str | None:
    """pydantic's complaint about ``value`` as a ``hint`` (None: it fits)."""
    try:
        TypeAdapter(hint).validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"{first['msg']} (got {first.get('input')!r})"
    return None


def split_grid(
    values: dict[str, Any], hints: dict[str, Any], prefix: KeyPath
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Fixed values and grid axes: a list where the hint wants one value is one run per item."""
    fixed: dict[str, Any] = {}
    axes: dict[str, list[Any]] = {}
    for key, value in values.items():
        hint = hints.get(key, Any)
        if not isinstance(value, list) or _type_error(value, hint) is None:
            fixed[key] = value
            continue
        if not value:
            raise ConfigError((*prefix, key), "an empty list gives no runs; list at least one value")
        for j, item in enumerate(value):
            if (error := _type_error(item, hint)) is not None:
                raise ConfigError((*prefix, key, j), error)
        axes[key] = value
    return fixed, axes


def _tag(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+]+", "_", str(value)).strip("_") or "x"


def _check_entry(entry: dict[str, Any], where: KeyPath) -> Any:
    """The entry's keys are known and its method exists; returns the method's spec."""
    from unmem.methods.registry import get_method

    if "method" not in entry:
        raise ConfigError(where, "missing `method:` (see `unmem methods`)")
    for key in entry:
        if key == "seed":
            raise ConfigError((*where, key), "set seeds for every run with the top-level `seeds:`")
        if key not in ENTRY_KEYS and key not in UnlearnConfig.model_fields:
            raise ConfigError(
                (*where, key),
                f"unknown key; known: name, sequence, {', '.join(sorted(UnlearnConfig.model_fields))}",
            )
    try:
        spec = get_method(str(entry["method"]))
    except UnmemError as exc:
        raise ConfigError((*where, "method"), str(exc)) from None
    if not isinstance(entry.get("force", False), bool):
        raise ConfigError((*where, "force"), f"must be true or false, got {entry['force']!r}")
    if entry.get("sequence", "continue") not in SEQUENCES:
        raise ConfigError(
            (*where, "sequence"), f"must be one of {', '.join(SEQUENCES)}, got {entry['sequence']!r}"
        )
    label = entry.get("name")
    if label is not None and not (isinstance(label, str) and NAME.fullmatch(label)):
        raise ConfigError((*where, "name"), f"must be a plain name (letters, digits, _.+-), got {label!r}")
    return spec


def _method_args(spec: Any, entry: dict[str, Any], where: KeyPath) -> tuple[dict[str, Any], dict[str, list]]:
    method_args = entry.get("method_args") or {}
    if not isinstance(method_args, dict):
        raise ConfigError((*where, "method_args"), f"expected a mapping, got {type(method_args).__name__}")
    known = {f.name for f in dataclasses.fields(spec.config_cls)}
    for key in method_args:
        if key not in known:
            raise ConfigError(
                (*where, "method_args", key),
                f"method '{spec.name}' has no hyper-parameter '{key}'; known: {', '.join(sorted(known))}",
            )
    hints = typing.get_type_hints(spec.config_cls)
    fixed, axes = split_grid(method_args, hints, (*where, "method_args"))
    for key, value in fixed.items():
        if (error := _type_error(value, hints.get(key, Any))) is not None:
            raise ConfigError((*where, "method_args", key), error)
    return fixed, axes


def _blame(spec: Any, args: dict[str, Any], where: KeyPath, error: UnmemError) -> ConfigError:
    """Point at the one hyper-parameter that fails on its own, else at the whole mapping."""
    for key, value in args.items():
        try:
            spec.make_config({key: value})
        except UnmemError as exc:
            return ConfigError((*where, key), str(exc))
    return ConfigError(where, str(error))


def _recipe_settings(recipe: Recipe | None, method: str, where: KeyPath) -> dict[str, Any]:
    if recipe is None:
        return {}
    try:
        return recipe.settings(method)
    except UnmemError as exc:
        raise ConfigError((*where, "method"), str(exc)) from None


def expand_entry(
    config: ExperimentConfig, index: int, entry: dict[str, Any], recipe: Recipe | None = None
) -> list[RunPlan]:
    """One entry of ``methods:`` -> its runs (grid points × seeds), each config fully built:
    the recipe's settings for the method, then ``defaults:``, then the entry."""
    where: KeyPath = ("methods", index)
    spec = _check_entry(entry, where)
    from_recipe = _recipe_settings(recipe, spec.name, where)
    args_fixed, args_axes = _method_args(spec, entry, where)
    args_fixed = {**from_recipe.pop("method_args", {}), **args_fixed}
    top = {k: v for k, v in entry.items() if k not in ("method", "method_args", *ENTRY_KEYS)}
    top_hints = {k: f.annotation for k, f in UnlearnConfig.model_fields.items()}
    top_fixed, top_axes = split_grid(top, top_hints, where)
    axes = [(("method_args", k), v) for k, v in args_axes.items()] + [((k,), v) for k, v in top_axes.items()]
    runs: list[RunPlan] = []
    for point in itertools.product(*(values for _, values in axes)):
        chosen = list(zip(axes, point, strict=True))
        grid = {keys[-1]: value for (keys, _), value in chosen}
        args = args_fixed | {keys[1]: v for (keys, _), v in chosen if len(keys) == 2}
        top_point = top_fixed | {keys[0]: v for (keys, _), v in chosen if len(keys) == 1}
        try:
            spec.make_config(args)
        except UnmemError as exc:
            raise _blame(spec, args, (*where, "method_args"), exc) from None
        tag = "_".join(f"{key}-{_tag(value)}" for key, value in grid.items())
        variant = (entry.get("name") or spec.name) + (f"-{tag}" if tag else "")
        for seed in config.seeds:
            fixed = {"method": spec.name, "method_args": args, "seed": seed}
            values = merge_settings(from_recipe, config.defaults, top_point) | fixed
            try:
                unlearn_config = UnlearnConfig(**values)
            except ValidationError as exc:
                error = pydantic_error(exc)
                key = error.keypath[0] if error.keypath else None
                prefix = where if key in top_point or key not in config.defaults else ("defaults",)
                if key in from_recipe and key not in top_point and key not in config.defaults:
                    prefix = ("recipe",)
                raise ConfigError(prefix + error.keypath, error.message) from None
            sweep = entry.get("name") or spec.name
            plan = RunPlan(f"{variant}-s{seed}", variant, spec.name, seed, grid, unlearn_config, sweep)
            plan.sequence, plan.force = entry.get("sequence", "continue"), entry.get("force")
            runs.append(plan)
    return runs


def expand_methods(config: ExperimentConfig, recipe: Recipe | None = None) -> list[RunPlan]:
    """Every run of the file; run names must be unique."""
    for key in config.defaults:
        if key in ("method", "method_args", "seed"):
            fix = "use `seeds:`" if key == "seed" else "set it per entry under `methods:`"
            raise ConfigError(("defaults", key), f"not allowed in defaults; {fix}")
        if key not in UnlearnConfig.model_fields:
            raise ConfigError(
                ("defaults", key), f"unknown key; known: {', '.join(sorted(UnlearnConfig.model_fields))}"
            )
    if len(set(config.seeds)) < len(config.seeds):
        raise ConfigError(("seeds",), f"seeds repeat: {config.seeds}")
    runs: list[RunPlan] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(config.methods):
        for run in expand_entry(config, index, entry, recipe):
            if run.name in seen:
                raise ConfigError(
                    ("methods", index),
                    f"run '{run.name}' repeats methods[{seen[run.name]}]; give one of them a `name:`",
                )
            seen[run.name] = index
            runs.append(run)
    return runs


def with_holdout(config: UnlearnConfig, holdout: Path | None) -> UnlearnConfig:
    """Calibrated stopping given no holdout file uses the benchmark's holdout split."""
    stop = config.calibrated_stop
    if stop is None or stop.holdout is not None:
        return config
    if holdout is None:
        raise UnmemError(
            "calibrated stopping needs a holdout set and the benchmark has none for this split; "
            "give calibrated_stop.holdout"
        )
    return config.model_copy(update={"calibrated_stop": stop.model_copy(update={"holdout": holdout})})
