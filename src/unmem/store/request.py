"""A deletion request, as written (``REQ.yaml`` or flags) and as resolved: records, method, checks.

The file (every key is checked; paths are relative to its folder)::

    id: ticket-4711                   # optional: default r-<hash of the records and settings>
    note: "GDPR art. 17, received 2025-03-02"   # optional, kept in the ledger
    forget: forget.jsonl              # the records to forget: question/answer, .jsonl/.json/.parquet
    # ... or records of a benchmark layout, named by id (`entity_id` or `id`) or a split's forget set:
    # benchmark: world
    # data: runs/world
    # ids: [e0029]                    # or `split: forget01` (tofu: forget01, muse: forget, ...)
    method: npo                       # or set it in `settings:`
    recipe: world                     # optional: start from a recipe's settings (unmem recipes)
    settings: {lr: 1.0e-3, method_args: {beta: 0.5}}   # UnlearnConfig fields, over the recipe's
    retain: retain.jsonl              # optional: data to keep (methods with a retain term need it)
    holdout: holdout.jsonl            # optional: never-seen records like these; calibrated stopping
                                      #   and the membership evidence compare against them
    retain_model: ../models/retain    # optional: forget quality in the evidence
    accept: {mia_p_min: 0.05, mia_auc_max: 0.7, utility_ratio_min: 0.9}    # null turns a check off
    eval: {metrics: [tofu, mia, extraction, utility]}                       # unmem.evaluation.EvalConfig

A benchmark request takes its retain and holdout sets, and the utility sets the evaluation
reads (real_world, world_facts, general text), from the benchmark unless given.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from unmem.config import UnlearnConfig
from unmem.errors import UnmemError, input_error
from unmem.evaluation.options import EvalConfig
from unmem.io import read_records
from unmem.store.ledger import canonical
from unmem.store.versions import file_sha256

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
DEFAULT_METRICS = ["tofu", "mia", "extraction", "utility"]
QA = ("question", "answer")
QA_TYPES = {"question": str, "answer": str}
ID_FIELDS = ("entity_id", "id")


class AcceptChecks(BaseModel):
    """When a request's result becomes a version (each threshold null: that check is off)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # LOSS membership attack, forget vs holdout, after unlearning. The forgotten records must look
    # like records the model never saw: the two-sided Mann-Whitney p of their scores against the
    # holdout's at least mia_p_min (no evidence they differ; a request's size sets how close to
    # AUC 0.5 that is: 12 records against 120 give AUC a standard error of ~0.09, 120 against 120
    # ~0.04), and the AUC within [mia_auc_min, mia_auc_max] whatever the size (below 0.5 the model
    # over-forgot, itself a tell).
    mia_p_min: float | None = Field(0.05, gt=0, lt=1)
    mia_auc_max: float | None = Field(0.7, gt=0, le=1)
    mia_auc_min: float | None = Field(0.3, ge=0, lt=1)
    utility_ratio_min: float | None = Field(0.9, gt=0)  # model utility after / before
    # The per-request ratio lets k requests compound to 0.9^k; this one bounds the drift against the
    # store's version 0 on the same data, at the cost of one more evaluation per request.
    utility_origin_ratio_min: float | None = Field(None, gt=0)
    forget_quality_min: float | None = Field(None, gt=0, le=1)  # needs retain_model
    forget_prob_max: float | None = Field(None, gt=0, le=1)  # mean probability of the forget answers


# check -> (metric it reads, comparison); the utility ratios read model_utility after / before
# the request and after / version 0's.
CHECKS = {
    "mia_p_min": ("mia_loss_p", ">="),
    "mia_auc_max": ("mia_loss_auc", "<="),
    "mia_auc_min": ("mia_loss_auc", ">="),
    "utility_ratio_min": ("model_utility_ratio", ">="),
    "utility_origin_ratio_min": ("model_utility_origin_ratio", ">="),
    "forget_quality_min": ("forget_quality", ">="),
    "forget_prob_max": ("forget_prob", "<="),
}


class RequestSpec(BaseModel):
    """The request file, as written."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, pattern=ID_PATTERN)
    note: str | None = None
    forget: str | None = None
    benchmark: str | None = None
    data: str | None = None
    ids: list[str] | None = Field(None, min_length=1)
    split: str | None = None  # or a split of the layout (its forget set; e.g. TOFU's forget01)
    method: str | None = None
    recipe: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    retain: str | None = None
    holdout: str | None = None
    retain_model: str | None = None
    accept: AcceptChecks = Field(default_factory=AcceptChecks)
    eval: EvalConfig = Field(default_factory=lambda: EvalConfig(metrics=DEFAULT_METRICS))


def record_hash(record: dict[str, Any]) -> str:
    """What identifies a QA record across requests: its question and answer, nothing else."""
    return hashlib.sha256(canonical({k: str(record[k]) for k in QA})).hexdigest()


@dataclass
class DataSet:
    """Records of one role, and where they came from (the user's file, hashed, or a benchmark)."""

    records: list[dict[str, Any]]
    file: Path | None = None

    def describe(self) -> dict[str, Any]:
        hashes = sorted(record_hash(r) for r in self.records)
        info: dict[str, Any] = {
            "records": len(self.records),
            "records_sha256": hashlib.sha256(canonical(hashes)).hexdigest(),
        }
        if self.file is not None:
            info["file_sha256"] = file_sha256(self.file)
        return info


@dataclass
class Request:
    """A request resolved: every record read and every setting built, nothing left to check."""

    id: str
    config: UnlearnConfig  # calibrated_stop.holdout is filled in when the data is written
    forget: DataSet
    retain: DataSet | None = None
    holdout: DataSet | None = None
    utility: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # evaluation-only sets
    retain_model: Path | None = None
    accept: AcceptChecks = field(default_factory=AcceptChecks)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(metrics=DEFAULT_METRICS))
    note: str | None = None
    source: Path | None = None  # the request file
    recipe: str | None = None
    benchmark: dict[str, Any] | None = None  # {"name", "data", "ids" or "split"} of a benchmark request

    def key(self) -> str:
        """What the request is: its records and settings (its work folder is reused only for the same)."""
        return hashlib.sha256(
            canonical(
                {
                    "forget": self.forget.describe(),
                    "retain": self.retain.describe() if self.retain else None,
                    "holdout": self.holdout.describe() if self.holdout else None,
                    "config": self.config.model_dump(mode="json", exclude={"calibrated_stop": {"holdout"}}),
                    "accept": self.accept.model_dump(),
                    "eval": self.eval.model_dump(mode="json", exclude={"threads", "batch_size"}),
                    "retain_model": str(self.retain_model) if self.retain_model else None,
                }
            )
        ).hexdigest()


def _fail(source: Path | str, keypath: tuple[str | int, ...], message: str, node: Any = None) -> UnmemError:
    from unmem.experiment.config import format_keypath, line_of

    return input_error(source, message, line=line_of(node, keypath), field=format_keypath(keypath))


def load_request(path: str | Path, overrides: dict[str, Any] | None = None) -> Request:
    """Read ``REQ.yaml`` (``overrides``: flags given beside it) into a resolved Request."""
    from unmem.experiment.config import pydantic_error, read_yaml_mapping

    path = Path(path)
    _, node, data = read_yaml_mapping(path, "request", "a mapping (forget:, method:, ...)")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "settings" and isinstance(data.get("settings"), dict):
            from unmem.recipes import merge_settings

            value = merge_settings(data["settings"], value)
        data[key] = value
    try:
        spec = RequestSpec(**data)
    except ValidationError as exc:
        error = pydantic_error(exc)
        raise _fail(path, error.keypath, error.message, node) from None
    return resolve(spec, path.parent, path, node)


def request_from_flags(values: dict[str, Any]) -> Request:
    """A request given as command-line flags (paths relative to the working directory)."""
    from unmem.experiment.config import pydantic_error

    try:
        spec = RequestSpec(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        error = pydantic_error(exc)
        raise UnmemError(f"command line: {error.message} ({'.'.join(map(str, error.keypath))})") from None
    return resolve(spec, Path.cwd(), "command line", None)


def resolve(spec: RequestSpec, base: Path, source: Path | str, node: Any) -> Request:
    def fail(keypath: tuple[str | int, ...], message: str) -> UnmemError:
        return _fail(source, keypath, message, node)

    def file(key: str) -> Path | None:
        value = getattr(spec, key)
        if value is None:
            return None
        resolved = (base / value).resolve()
        if not resolved.is_file():
            raise fail((key,), f"{resolved}: file not found")
        return resolved

    if (spec.forget is not None) + (spec.ids is not None) + (spec.split is not None) != 1:
        raise fail(
            ("forget",),
            "give the records to forget: `forget: FILE`, or `benchmark:`, `data:` and `ids:` (records by id) "
            "or `split:` (a split of the layout)",
        )

    def dataset(key: str, default: DataSet | None = None) -> DataSet | None:
        path = file(key)
        return DataSet(read_records(path, QA, types=QA_TYPES), path) if path else default

    benchmark, defaults = None, {}
    utility: dict[str, list[dict[str, Any]]] = {}
    if spec.forget is None:
        benchmark, defaults, utility = _benchmark_records(spec, base, fail)
    forget = dataset("forget") or defaults["forget"]
    retain, holdout = dataset("retain", defaults.get("retain")), dataset("holdout", defaults.get("holdout"))
    config = _config(spec, base, fail, holdout is not None)
    retain_model = None
    if spec.retain_model is not None:
        from unmem.models import resolve_model_dir

        try:
            retain_model = resolve_model_dir((base / spec.retain_model).resolve()).resolve()
        except UnmemError as exc:
            raise fail(("retain_model",), str(exc)) from None
    request = Request(
        id="",
        config=config,
        forget=forget,
        retain=retain,
        holdout=holdout,
        utility=utility,
        retain_model=retain_model,
        accept=spec.accept,
        eval=spec.eval,
        note=spec.note,
        source=Path(source).resolve() if isinstance(source, Path) else None,
        recipe=spec.recipe,
        benchmark=benchmark,
    )
    request.id = spec.id or f"r-{request.key()[:10]}"
    return request


def _config(spec: RequestSpec, base: Path, fail: Any, has_holdout: bool) -> UnlearnConfig:
    from unmem.recipes import load_recipe, merge_settings

    settings = dict(spec.settings)
    method = spec.method or settings.get("method")
    if not method:
        raise fail(("method",), "no method: set `method:` (see `unmem methods`)")
    if spec.recipe is not None:
        name = spec.recipe
        try:
            recipe = load_recipe(base / name if name.endswith((".yaml", ".yml")) else name)
            settings = merge_settings(recipe.settings(method), settings)
        except UnmemError as exc:
            raise fail(("recipe",), str(exc)) from None
    settings["method"] = method
    stop = settings.get("calibrated_stop")
    if stop is not None and not has_holdout and not (isinstance(stop, dict) and stop.get("holdout")):
        raise fail(
            ("holdout",),
            "calibrated stopping (from the recipe or settings) needs a holdout set: records like these that "
            "the model never saw; give `holdout: FILE`",
        )
    try:
        return UnlearnConfig(**settings)
    except ValidationError as exc:
        first = exc.errors()[0]
        keypath = ("settings", *(str(part) for part in first["loc"]))
        raise fail(keypath, f"{first['msg']} (got {first.get('input')!r})") from None
    except UnmemError as exc:
        raise fail(("settings", "method_args"), str(exc)) from None


def _benchmark_records(
    spec: RequestSpec, base: Path, fail: Any
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Records of a benchmark layout (named by id, or a split's forget set), the layout's retain
    and holdout records (without the requested ones) and the sets utility is measured on."""
    from unmem.data.benchmarks import get_benchmark, load_benchmark

    key = "ids" if spec.ids is not None else "split"
    if spec.benchmark is None or spec.data is None:
        raise fail((key,), f"`{key}:` needs `benchmark:` (the layout) and `data:` (its directory)")
    try:
        layout = get_benchmark(spec.benchmark)
    except UnmemError as exc:
        raise fail(("benchmark",), str(exc)) from None
    data_dir = (base / spec.data).resolve()
    split = spec.split or layout.default_split
    try:
        files = layout.unlearn_files(data_dir, split)
        evaluation = load_benchmark(layout.name, data_dir, split)
    except UnmemError as exc:
        raise fail(("split",) if spec.split else ("data",), str(exc)) from None
    split_forget = read_records(files.forget, QA)
    retain = read_records(files.retain, QA) if files.retain else []
    forget = (
        split_forget
        if spec.ids is None
        else _named(split_forget + retain, spec.ids, data_dir, layout.name, fail)
    )
    taken = {record_hash(r) for r in forget}
    holdout = read_records(files.holdout, QA) if files.holdout else []
    defaults = {
        "forget": DataSet(forget),
        "retain": DataSet([r for r in retain if record_hash(r) not in taken]) if retain else None,
        "holdout": DataSet(holdout) if holdout else None,
    }
    utility = {name: evaluation.qa.get(name) or [] for name in ("real_world", "world_facts")}
    utility["general_eval"] = [{"text": text} for text in evaluation.general]
    info = {"name": layout.name, "data": str(data_dir), key: spec.ids if spec.ids is not None else split}
    return info, defaults, {k: v for k, v in utility.items() if v}


def _named(
    pool: list[dict[str, Any]], ids: list[str], data_dir: Path, layout: str, fail: Any
) -> list[dict[str, Any]]:
    """The records whose ``entity_id`` or ``id`` is one of ``ids``; an id none has is an error."""
    for j, wanted in enumerate(ids):
        if not any(str(r.get(f)) == wanted for r in pool for f in ID_FIELDS):
            sample = next((str(r.get(f)) for r in pool for f in ID_FIELDS if r.get(f) is not None), None)
            hint = (
                f"; ids there look like {sample!r}"
                if sample
                else f"; its records carry no {' or '.join(ID_FIELDS)} field"
            )
            raise fail(("ids", j), f"no record with id {wanted!r} in {data_dir} ({layout}){hint}")
    wanted_ids = set(ids)
    return [r for r in pool if any(str(r.get(f)) in wanted_ids for f in ID_FIELDS if r.get(f) is not None)]
