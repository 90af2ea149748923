"""Where an experiment's data and models come from, resolved and checked before any work starts.

Data: the built-in world (generated here from ``world:``, or an existing one in
``data:``/``world_dir:``) or any registered layout (``benchmark: tofu|muse|files`` with its
``data:`` directory). Models: trained here on the world (``models:``, with
``retain_seeds:`` for extra retain models), or given (``target:`` and none, one or several
``retain:`` directories).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from unmem.errors import UnmemError
from unmem.experiment.config import ConfigError, ExperimentConfig, pydantic_error


@dataclass
class BenchmarkPlan:
    name: str
    split: str
    data_dir: Path | None  # None: the world is generated into the experiment's world/
    world_config: Any = None  # WorldConfig when the world is generated here


@dataclass
class ModelPlan:
    pretrain: Any = None  # PretrainConfig when the models are trained here
    retain_seeds: list[int] | None = None  # several retain models for the noise floor (trained here)
    target: Path | None = None  # given models
    retains: list[Path] = field(default_factory=list)  # the first is forget quality's reference

    @property
    def given(self) -> bool:
        return self.target is not None


def _world(config: ExperimentConfig, base: Path, split: str | None) -> BenchmarkPlan:
    from unmem.data.world import PRESETS, World, WorldConfig

    existing_key = "world_dir" if config.world_dir is not None else "data"
    existing = config.world_dir if config.world_dir is not None else config.data
    if config.world_dir is not None and config.data is not None:
        raise ConfigError(("world_dir",), "give `data:` or `world_dir:` (the same thing), not both")
    if config.world is not None and existing is not None:
        raise ConfigError((existing_key,), "give either `world:` (generate) or an existing world, not both")
    split = split or "forget10"
    if existing is not None:
        world_dir = (base / existing).resolve()
        if not (world_dir / "world.json").is_file():
            raise ConfigError((existing_key,), f"{world_dir}: not a world directory (no world.json)")
        try:
            splits = [s for s in World.load(world_dir).split_names() if s.startswith("forget")]
        except UnmemError as exc:
            raise ConfigError((existing_key,), str(exc)) from None
        plan = BenchmarkPlan("world", split, world_dir)
    else:
        values = dict(config.world or {})
        for key in values:
            if key not in WorldConfig.model_fields:
                raise ConfigError(
                    ("world", key), f"unknown key; known: {', '.join(WorldConfig.model_fields)}"
                )
        preset = values.pop("preset", "default")
        if preset not in PRESETS:
            raise ConfigError(
                ("world", "preset"), f"unknown world preset '{preset}'; known: {', '.join(PRESETS)}"
            )
        try:
            world_config = WorldConfig.from_preset(preset, **values)
        except UnmemError as exc:
            found = re.search(r"field '([^'.]+)", str(exc))
            raise ConfigError(("world", found.group(1)) if found else ("world",), str(exc)) from None
        splits = [f"forget{pct:02d}" for pct in world_config.forget_sizes()]
        plan = BenchmarkPlan("world", split, None, world_config)
    if split not in splits:
        raise ConfigError(("split",), f"unknown forget split '{split}'; known: {', '.join(splits)}")
    return plan


def resolve_benchmark(config: ExperimentConfig, base: Path) -> BenchmarkPlan:
    """The data of the experiment; a layout's files are read once here so errors come first."""
    from unmem.data.benchmarks import get_benchmark

    try:
        spec = get_benchmark(config.benchmark)
    except UnmemError as exc:
        raise ConfigError(("benchmark",), str(exc)) from None
    if spec.name == "world":
        return _world(config, base, config.split)
    for key in ("world", "world_dir"):
        if getattr(config, key) is not None:
            raise ConfigError(
                (key,), f"only for `benchmark: world`; give the {spec.name} directory as `data:`"
            )
    if config.data is None:
        raise ConfigError(("benchmark",), f"benchmark '{spec.name}' needs `data:` (its data directory)")
    data_dir = (base / config.data).resolve()
    split = config.split or spec.default_split
    try:
        spec.load(data_dir, split)
        spec.unlearn_files(data_dir, split)
    except UnmemError as exc:
        raise ConfigError(("data",), str(exc)) from None
    return BenchmarkPlan(spec.name, split, data_dir)


def _given_models(config: ExperimentConfig, base: Path) -> ModelPlan:
    from unmem.evaluation.cache import check_weights
    from unmem.models import resolve_model_dir

    if config.models is not None:
        key = "target" if config.target is not None else "retain"
        raise ConfigError(
            (key,), "give either `models:` (train them) or `target:`/`retain:` (yours), not both"
        )
    if config.target is None:
        raise ConfigError(("retain",), "a retain model needs `target:` too (the model to unlearn from)")
    retains = [config.retain] if isinstance(config.retain, str) else list(config.retain or [])
    paths: dict[tuple[str | int, ...], str] = {("target",): config.target}
    paths |= {
        (("retain",) if isinstance(config.retain, str) else ("retain", i)): p for i, p in enumerate(retains)
    }
    resolved = {}
    for keypath, value in paths.items():
        try:
            resolved[keypath] = resolve_model_dir((base / value).resolve())
            check_weights(resolved[keypath])  # now, not when the first stage loads it
        except UnmemError as exc:
            raise ConfigError(keypath, str(exc)) from None
    target = resolved.pop(("target",))
    return ModelPlan(target=target, retains=list(resolved.values()))


def resolve_models(config: ExperimentConfig, base: Path, benchmark: BenchmarkPlan) -> ModelPlan:
    from unmem.models import get_preset
    from unmem.pretrain import PretrainConfig

    if config.target is not None or config.retain is not None:
        return _given_models(config, base)
    if benchmark.name != "world":
        raise ConfigError(
            ("benchmark",),
            f"benchmark '{benchmark.name}' needs your models: `target:` (and `retain:` if you have one); "
            "models are trained here only on the world",
        )
    values = {k: v for k, v in (config.models or {}).items() if v is not None}
    seeds = values.pop("retain_seeds", None)
    if seeds is not None and (
        not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds)
    ):
        raise ConfigError(("models", "retain_seeds"), f"expected a list of integer seeds, got {seeds!r}")
    if seeds is not None and len(set(seeds)) < len(seeds):
        raise ConfigError(("models", "retain_seeds"), f"seeds repeat: {seeds}")
    try:
        pretrain = PretrainConfig(**values)
    except ValidationError as exc:
        raise pydantic_error(exc, ("models",)) from None
    try:
        get_preset(pretrain.preset)
    except UnmemError as exc:
        raise ConfigError(("models", "preset"), str(exc)) from None
    if seeds is not None and pretrain.seed not in seeds:
        raise ConfigError(
            ("models", "retain_seeds"),
            f"must include the models' seed {pretrain.seed}: that retain model is forget quality's reference",
        )
    return ModelPlan(pretrain=pretrain, retain_seeds=seeds)
