"""``evaluate()``: load the data, decide which families need computing, run them, write the summary.

Caching: each family's key hashes the model's files (weights, config, tokenizer), the
benchmark data, split, sample cap, options and what the family adds (the retain
reference for families that compare with it, the reference model of the MIA, the lm-eval
task files). A family whose key matches ``summary.json`` is not recomputed (and the model
is not even loaded when nothing is left to do); ``summary.cached`` says which families
this call reused. The summary is rewritten after every family, so an interrupted run
resumes where it stopped.

Safety: the output is checked before anything loads: it may not be, hold or sit inside an
input (model, base model, data, retain and reference models, retain results, lm-eval
tasks), and an existing one must be empty or an earlier ``unmem eval`` output (it carries
``.unmem-output``). While it runs, ``OUT.lock`` names the process that owns ``OUT``.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from tqdm.auto import tqdm

from unmem.config import describe_validation_error
from unmem.data.benchmarks import load_benchmark
from unmem.errors import UnmemError
from unmem.evaluation.cache import base_model, check_weights, dtype_name, family_key, model_hash
from unmem.evaluation.options import EVAL_VERSION, EvalConfig
from unmem.evaluation.reference import RetainSource, results_dir
from unmem.evaluation.registry import (
    EvalInputs,
    FamilyContext,
    FamilyResult,
    FamilySpec,
    all_families,
    resolve_families,
)
from unmem.evaluation.session import ModelSession
from unmem.io import (
    OUTPUT_MARKER,
    check_not_an_input,
    exclusive_lock,
    is_unmem_output,
    json_safe,
    mark_output,
    read_json,
    write_jsonl,
)
from unmem.layout import EvalDir
from unmem.models import load_model, resolve_model_dir
from unmem.results import EvalSummary


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op CPU threads for a block (None: leave them), then restore them."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def eval_config(config: EvalConfig | None, settings: dict[str, Any]) -> EvalConfig:
    """``config`` with keyword settings (``batch_size=8``, ``options=...``) laid over it, validated."""
    if not settings:
        return config or EvalConfig()
    values = (dict(config) if config is not None else {}) | settings
    try:
        return EvalConfig(**values)
    except ValidationError as exc:
        raise UnmemError(f"evaluation settings: {describe_validation_error(exc)}") from None


@dataclass
class EvalPlan:
    """Everything decided before the model loads: what to compute, with which keys, into which summary."""

    model_path: Path
    inputs: EvalInputs
    out: EvalDir
    families: dict[str, FamilySpec]  # selected, in report order
    keys: dict[str, str]
    todo: list[str]
    retain: RetainSource
    summary: EvalSummary


def _previous_summary(out: EvalDir, overwrite: bool, base: dict[str, Any]) -> EvalSummary | None:
    if not out.summary.is_file():
        return None
    if overwrite:
        for stale in out.per_sample_dir.glob("*.jsonl"):
            stale.unlink()
        return None
    previous = EvalSummary.read(out.summary)
    for key in ("model_hash", "data_fingerprint"):
        if getattr(previous, key) != base[key]:
            raise UnmemError(
                f"{out.summary}: holds results of another model or data ({key} {getattr(previous, key)} != "
                f"{base[key]}); choose another --out or pass --overwrite"
            )
    return previous


def _carry_over(summary: EvalSummary, previous: EvalSummary, kept: list[str], order: list[str]) -> None:
    """Families computed earlier with the same key keep their results in the new summary."""
    for family in (*[f for f in order if f in kept], *[f for f in kept if f not in order]):
        ids = previous.metric_ids.get(family) or []
        summary.metrics |= {m: previous.metrics.get(m) for m in ids}
        summary.reasons |= {m: previous.reasons[m] for m in ids if m in previous.reasons}
        summary.details[family] = previous.details.get(family, {})
        summary.seconds[family] = previous.seconds.get(family)
        summary.cache[family] = previous.cache[family]
    summary.metric_ids = {f: previous.metric_ids.get(f, []) for f in kept}


def plan_evaluation(
    model_dir: str | Path,
    *,
    benchmark: str,
    data: str | Path,
    split: str,
    out_dir: str | Path,
    retain_model: str | Path | None,
    retain_results: str | Path | None,
    reference_model: str | Path | None,
    retain_cache_dir: str | Path | None,
    overwrite: bool,
    config: EvalConfig,
) -> EvalPlan:
    model_path = resolve_model_dir(model_dir)
    eval_data = load_benchmark(benchmark, data, split).limited(config.max_samples)
    reference_dir = resolve_model_dir(reference_model) if reference_model is not None else None
    inputs = EvalInputs(eval_data, config, reference_dir)
    registered = all_families()
    families = {name: registered[name] for name in resolve_families(config.metrics, inputs)}
    out = EvalDir(out_dir)
    dtype = dtype_name(config.device, config.dtype)
    base = {
        "model": str(model_path.resolve()),
        "model_hash": model_hash(model_path),
        "benchmark": benchmark,
        "data": str(eval_data.root.resolve()),
        "split": split,
        "max_samples": config.max_samples,
        "data_hash": eval_data.content_hash(),
        "data_fingerprint": eval_data.fingerprint(),
    }
    previous = _previous_summary(out, overwrite, base)
    cache_dir = Path(retain_cache_dir) if retain_cache_dir is not None else out.retain_cache
    retain = RetainSource(
        retain_model=retain_model, retain_results=retain_results, inputs=inputs, cache_dir=cache_dir
    )
    keys = {
        name: family_key(
            name,
            version=EVAL_VERSION,
            family_version=spec.version,
            model=base["model_hash"],
            data=base["data_fingerprint"],
            dtype=dtype,
            options=config.options,
            retain=retain.fingerprint if spec.retain is not None else None,
            extra=spec.cache_inputs(inputs) if spec.cache_inputs is not None else None,
        )
        for name, spec in families.items()
    }
    old_cache = previous.cache if previous is not None else {}
    todo = [f for f in families if old_cache.get(f) != keys[f]]
    kept = [f for f in old_cache if f not in todo]  # earlier families stay, as long as they match
    retain_kept = any(f in registered and registered[f].retain is not None for f in kept)
    summary = EvalSummary(
        **base,
        # A family kept from an earlier call keeps the retain reference it was computed with.
        retain_reference=retain.path or (previous.retain_reference if previous and retain_kept else None),
        reference_model=str(reference_dir.resolve()) if reference_dir else None,
        cached={f: f not in todo for f in families},
        options=asdict(config.options) | {"batch_size": config.batch_size, "dtype": dtype},
        notes=eval_data.notes,
        unmem_eval_version=EVAL_VERSION,
    )
    if previous is not None:
        _carry_over(summary, previous, kept, list(registered))
    return EvalPlan(model_path, inputs, out, families, keys, todo, retain, summary)


def input_paths(
    model_dir: str | Path,
    *,
    data: str | Path,
    retain_model: str | Path | None,
    retain_results: str | Path | None,
    reference_model: str | Path | None,
    lm_eval_tasks: Path | None,
) -> dict[str, Path | None]:
    """Every path an evaluation reads: model directories resolved, with the base models they name."""
    paths: dict[str, Path | None] = {"data": Path(data), "lm-eval tasks": lm_eval_tasks}
    if retain_results is not None:
        paths["retain results"] = results_dir(Path(retain_results))[0]
    for name, given in (
        ("model", model_dir),
        ("retain model", retain_model),
        ("reference model", reference_model),
    ):
        if given is not None:
            paths[name] = resolve_model_dir(given)
            paths[f"{name}'s base"] = base_model(paths[name])
    return paths


def _is_eval_output(path: Path) -> bool:
    """Marked by unmem, or an evaluation written before the marker existed (its summary says so)."""
    if is_unmem_output(path):
        return True
    if not (path / "summary.json").is_file():
        return False
    try:
        summary = read_json(path / "summary.json")
    except UnmemError:
        return False
    return isinstance(summary, dict) and bool(summary.get("model_hash")) and "metric_ids" in summary


def check_eval_output(
    out_dir: str | Path, inputs: dict[str, Path | None], retain_cache_dir: str | Path | None
) -> Path:
    """The resolved output, checked: never an input, and only empty or an earlier evaluation
    (``--overwrite`` recomputes results; it never makes a user's folder writable)."""
    out = check_not_an_input(out_dir, inputs)
    if retain_cache_dir is not None:
        check_not_an_input(retain_cache_dir, inputs, flag="--retain-cache")
    if out.exists() and not out.is_dir():
        raise UnmemError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not _is_eval_output(out):
        raise UnmemError(
            f"--out {out}: not empty and not an `unmem eval` output (no {OUTPUT_MARKER}); "
            "choose another --out"
        )
    return out


def run_plan(plan: EvalPlan) -> None:
    """Compute the families of ``plan.todo``, rewriting the summary after each one."""
    config = plan.inputs.config
    model, tokenizer = load_model(
        plan.model_path, device=config.device, dtype=config.dtype, trust_remote_code=config.trust_remote_code
    )
    mark_output(plan.out.root)  # the first write, once the model has loaded
    session = ModelSession(model, tokenizer, plan.inputs.data, config.options, config.batch_size)
    references = plan.retain.load(plan.todo)
    bar = tqdm(plan.todo, desc="eval", disable=None)
    for family in bar:
        bar.set_postfix_str(family)
        start = time.perf_counter()
        result = plan.families[family].run(FamilyContext(session, plan.inputs, references.get(family)))
        _save_family(plan, family, result, time.perf_counter() - start)


def _save_family(plan: EvalPlan, family: str, result: FamilyResult, seconds: float) -> None:
    """Its per-sample rows, then the summary with it: rewritten after every family, so an
    interrupted run keeps (and later reuses) what is done. A full disk says what was kept."""
    summary = plan.summary
    summary.metrics |= result.metrics
    summary.metric_ids[family] = list(result.metrics)
    summary.details[family] = json_safe(result.details)
    summary.reasons |= {m: why for m, why in result.reasons.items() if result.metrics.get(m) is None}
    summary.seconds[family] = round(seconds, 3)
    summary.cache[family] = plan.keys[family]
    try:
        write_jsonl(plan.out.per_sample(family), json_safe(result.rows))
        summary.write(plan.out.summary)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        kept = [f for f in summary.metric_ids if f != family]
        what = f"the results of {', '.join(kept)} are kept" if kept else "no family was finished before it"
        raise UnmemError(
            f"{plan.out.summary}: no space left on the device while writing the {family} results; "
            f"{what}; free space and re-run the same command to resume"
        ) from None


def evaluate(
    model_dir: str | Path,
    *,
    data: str | Path,
    out_dir: str | Path,
    benchmark: str = "world",
    split: str = "forget10",
    retain_model: str | Path | None = None,
    retain_results: str | Path | None = None,
    reference_model: str | Path | None = None,
    retain_cache_dir: str | Path | None = None,
    overwrite: bool = False,
    config: EvalConfig | None = None,
    **settings: Any,
) -> Path:
    """Evaluate ``model_dir`` and return ``out_dir`` (holding summary.json and per_sample/).

    ``config`` (or keyword settings laid over it: ``metrics``, ``batch_size``,
    ``max_samples``, ``device``, ``dtype``, ``threads``, ``lm_eval_tasks``, ``trust_remote_code``,
    ``options``) says how; the families, the retain reference and caching: ``unmem.evaluation``.
    The retain model's numbers are cached in ``retain_cache_dir`` (default: ``OUT/retain_cache``).
    """
    resolved = eval_config(config, settings)
    paths = input_paths(
        model_dir,
        data=data,
        retain_model=retain_model,
        retain_results=retain_results,
        reference_model=reference_model,
        lm_eval_tasks=resolved.lm_eval_tasks,
    )
    out = check_eval_output(out_dir, paths, retain_cache_dir)
    with exclusive_lock(out), torch_threads(resolved.threads):
        plan = plan_evaluation(
            model_dir,
            benchmark=benchmark,
            data=data,
            split=split,
            out_dir=out_dir,
            retain_model=retain_model,
            retain_results=retain_results,
            reference_model=reference_model,
            retain_cache_dir=retain_cache_dir,
            overwrite=overwrite,
            config=resolved,
        )
        if plan.todo:
            for name in ("model", "retain model", "reference model"):
                if paths.get(name) is not None:
                    check_weights(paths[name])  # before anything loads: a corrupt file is one line
            run_plan(plan)
        else:
            mark_output(plan.out.root)
            plan.summary.write(plan.out.summary)
    return plan.out.root


def read_summary(out_dir: str | Path) -> EvalSummary:
    return EvalSummary.read(EvalDir(out_dir).summary)
