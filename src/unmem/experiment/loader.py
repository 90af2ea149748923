"""Read an experiment file into an ``Experiment``: validated, every path resolved, nothing left to check."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from unmem.errors import UnmemError, input_error
from unmem.evaluation import all_families, get_family
from unmem.experiment.config import (
    ConfigError,
    ExperimentConfig,
    format_keypath,
    line_of,
    parse_config,
    pydantic_error,
    read_yaml_mapping,
)
from unmem.experiment.plan import RunPlan, expand_methods
from unmem.experiment.sources import BenchmarkPlan, ModelPlan, resolve_benchmark, resolve_models
from unmem.recipes import Recipe, load_recipe


@dataclass
class Experiment:
    """A validated experiment."""

    config: ExperimentConfig
    source: Path | None  # the YAML file
    text: str  # its text, saved with the results
    runs: list[RunPlan]
    benchmark: BenchmarkPlan
    models: ModelPlan
    tracking: list[str] = field(default_factory=list)


def _check_families(config: ExperimentConfig) -> None:
    """Known families, and settings each could never run with (before the data exists)."""
    for j, family in enumerate(config.eval.metrics or []):
        try:
            get_family(family)
        except UnmemError as exc:
            raise ConfigError(("eval", "metrics", j), str(exc)) from None
    for name, spec in all_families().items():
        if spec.check_settings is None or (config.eval.metrics and name not in config.eval.metrics):
            continue
        try:
            spec.check_settings(config.eval)
        except UnmemError as exc:
            raise ConfigError(("eval",), str(exc)) from None


def _recipe(config: ExperimentConfig, base: Path) -> Recipe | None:
    if config.recipe is None:
        return None
    name = config.recipe
    try:
        return load_recipe(base / name if name.endswith((".yaml", ".yml")) else name)
    except UnmemError as exc:
        raise ConfigError(("recipe",), str(exc)) from None


def _holdout_paths(runs: list[RunPlan], base: Path, benchmark: BenchmarkPlan) -> None:
    """Calibrated stopping's holdout: a path is relative to the experiment file; none given
    means the benchmark's holdout split, which must exist."""
    from unmem.data.benchmarks import get_benchmark

    where = ("defaults", "calibrated_stop", "holdout")
    uses_split = False
    for run in runs:
        stop = run.config.calibrated_stop
        if stop is None:
            continue
        if stop.holdout is None:
            uses_split = True
            continue
        holdout = (base / stop.holdout).resolve()
        if not holdout.is_file():
            raise ConfigError(where, f"{holdout}: file not found")
        run.config = run.config.model_copy(
            update={"calibrated_stop": stop.model_copy(update={"holdout": holdout})}
        )
    # A world always has its holdout splits; other data is checked once, not once per run.
    if uses_split and benchmark.data_dir is not None and benchmark.name != "world":
        files = get_benchmark(benchmark.name).unlearn_files(benchmark.data_dir, benchmark.split)
        if files.holdout is None:
            raise ConfigError(
                where,
                f"calibrated stopping needs a holdout set and {benchmark.data_dir} has none for "
                f"{benchmark.split}; give calibrated_stop.holdout",
            )


def _check_requests(config: ExperimentConfig, benchmark: BenchmarkPlan) -> None:
    """``requests:`` needs the world (which names them), at most as many as it has; ``sequence:``
    needs ``requests:``; the acceptance checks are the store's."""
    from pydantic import ValidationError

    from unmem.data.world import World
    from unmem.store.request import AcceptChecks

    if config.requests is None:
        for i, entry in enumerate(config.methods):
            for key in ("sequence", "force"):
                if key in entry:
                    raise ConfigError(("methods", i, key), "only with `requests:` (a sequence of requests)")
        return
    if benchmark.name != "world":
        raise ConfigError(("requests",), "the sequence of requests is the world's: needs `benchmark: world`")
    if benchmark.world_config is not None:
        available = max(benchmark.world_config.forget_sizes().values())
    else:
        available = len(World.load(benchmark.data_dir).requests())
    if config.requests.count is not None and config.requests.count > available:
        raise ConfigError(
            ("requests", "count"), f"the world names {available} requests, got {config.requests.count}"
        )
    try:
        AcceptChecks(**config.requests.accept)
    except ValidationError as exc:
        raise pydantic_error(exc, ("requests", "accept")) from None


def validate(config: ExperimentConfig, text: str, source: Path) -> Experiment:
    base = source.parent
    benchmark = resolve_benchmark(config, base)
    models = resolve_models(config, base, benchmark)
    runs = expand_methods(config, _recipe(config, base))
    _holdout_paths(runs, base, benchmark)
    _check_requests(config, benchmark)
    _check_families(config)
    return Experiment(
        config=config,
        source=source.resolve(),
        text=text,
        runs=runs,
        benchmark=benchmark,
        models=models,
        tracking=list(dict.fromkeys(config.tracking)),
    )


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment file; any problem is one UnmemError naming key and line."""
    path = Path(path)
    text, node, data = read_yaml_mapping(path, "experiment", "a mapping of settings (name:, methods:, ...)")
    try:
        return validate(parse_config(data), text, path)
    except ConfigError as exc:
        raise input_error(
            path, exc.message, line=line_of(node, exc.keypath), field=format_keypath(exc.keypath)
        ) from None


def shipped_config(name: str) -> Path:
    """Path of a config shipped in ``unmem/configs`` (demo, micro)."""
    from importlib.resources import files

    path = Path(str(files("unmem") / "configs" / f"{name}.yaml"))
    if not path.is_file():
        raise UnmemError(f"no shipped experiment config '{name}'")
    return path
