"""The result files, typed: evaluation summary, unlearning-run summary, experiment report data.

Each is a pydantic model with a ``version`` and is read and written only through
``read``/``write`` here, so a field is named in one place. Readers accept files of older
versions (missing fields take their defaults); a file that is not what it should be is an
``UnmemError`` naming it. Where the files live: ``unmem.layout``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from unmem.errors import input_error
from unmem.io import json_safe, read_json, write_json

T = TypeVar("T", bound="ResultFile")


class ResultFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @classmethod
    def read(cls: type[T], path: str | Path) -> T:
        path = Path(path)
        data = read_json(path)
        if not isinstance(data, dict):
            raise input_error(path, f"expected a JSON object ({cls.__name__})")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise input_error(path, f"{first['msg']} (got {first.get('input')!r})", field=field) from None

    def write(self, path: str | Path) -> Path:
        return write_json(path, json_safe(self.model_dump(mode="json")))


class EvalSummary(ResultFile):
    """``summary.json`` of an evaluation (``unmem eval``, one row of an experiment)."""

    version: int = 2  # 1: before `reasons`
    model: str = ""
    model_hash: str = ""
    benchmark: str = "world"
    data: str | None = None
    split: str | None = None
    max_samples: int | None = None
    data_hash: str | None = None
    data_fingerprint: str | None = None
    retain_reference: str | None = None  # the retain model (or results) forget quality compares against
    reference_model: str | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)  # flat: what reports and tables read
    metric_ids: dict[str, list[str]] = Field(default_factory=dict)  # family -> its metric ids
    details: dict[str, Any] = Field(default_factory=dict)  # family -> extra numbers
    reasons: dict[str, str] = Field(default_factory=dict)  # metric id -> why it is null
    seconds: dict[str, float | None] = Field(default_factory=dict)
    cache: dict[str, str] = Field(default_factory=dict)  # family -> cache key of its results
    cached: dict[str, bool] = Field(default_factory=dict)  # family -> reused by the last call
    options: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    unmem_eval_version: int | None = None


class RunSummary(ResultFile):
    """``summary.json`` of an unlearning run (written by ``unmem.train.unlearn``)."""

    model_config = ConfigDict(extra="allow")

    version: int = 1
    method: str | None = None
    model: str | None = None
    forget: str | None = None
    retain: str | None = None
    steps: int | None = None
    published_step: int | None = None  # the step whose weights were published (a stopping rule's choice)
    epochs_started: int | None = None
    stop_reason: str | None = None
    train_seconds: float | None = None
    tokens: int | None = None
    tokens_per_second: float | None = None
    peak_memory_mb: float | None = None
    processes: int | None = None
    trainable_parameters: int | None = None
    final: dict[str, float] = Field(default_factory=dict)
    heldout_ppl_start: float | None = None


class ReportRow(BaseModel):
    """One evaluated model of an experiment: the target, a retain model, or one method run."""

    model_config = ConfigDict(extra="ignore")

    id: str
    kind: Literal["target", "retain", "method"] = "method"
    variant: str = ""  # rows sharing (experiment, variant) are seeds of one setting; "" = the id
    method: str | None = None
    seed: int | None = None
    grid: dict[str, Any] = Field(default_factory=dict)
    sweep: str | None = None  # the experiment entry a grid point belongs to (its `name` or method)
    config: dict[str, Any] = Field(default_factory=dict)  # the run's main settings, for the report
    model: str | None = None
    eval_dir: str | None = None  # relative to the experiment directory
    run_dir: str | None = None
    pretrain: str | None = None  # pretrain.json of a model trained by the experiment
    status: str = "done"
    error: str | None = None

    @property
    def label(self) -> str:
        return self.variant or self.id


class RetainPair(BaseModel):
    a: str
    b: str
    forget_quality: float | None


class NoiseFloor(BaseModel):
    """Forget quality between every pair of retain models: what "as good as retraining" can reach."""

    models: list[str]
    pairs: list[RetainPair]
    median: float | None
    min: float | None


class ReportData(ResultFile):
    """``report_data.json``: what the report of an experiment reads."""

    version: int = 2  # 1: one retain model as a string, no benchmark, noise floor or reasons
    name: str = ""
    split: str | None = None
    benchmark: str = "world"
    data: str | None = None  # the benchmark's data directory
    world: str | None = None  # the world directory (world benchmark)
    target: str | None = None
    retain: list[str] = Field(default_factory=list)  # the first is the reference of forget quality
    seeds: list[int] = Field(default_factory=list)
    rows: list[ReportRow] = Field(default_factory=list)
    noise_floor: NoiseFloor | None = None
    not_computed: dict[str, str] = Field(default_factory=dict)  # metric id -> why, for the whole report

    @field_validator("retain", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value


class SequenceStep(BaseModel):
    """One method run after request ``k`` of a sequence (``sequence.json``)."""

    k: int
    outcome: str  # honoured | refused | skipped (store) or "retrained" (union)
    version: int | None = None  # the store's current version after the request
    seconds: float | None = None  # unlearning (and fusing) this request
    steps: int | None = None  # optimiser steps it trained
    stop_step: int | None = None  # the step whose weights calibrated stopping published
    metrics: dict[str, float | None] = Field(default_factory=dict)  # on the union of requests 1..k
    # "j" -> request j's own metrics (its forget probability, ...), measured after request k
    per_request: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    checks: list[dict[str, Any]] = Field(default_factory=list)


class SequenceRun(BaseModel):
    name: str
    method: str
    mode: str  # "continue" (a store) or "union" (the union unlearned from the target each time)
    store: str | None = None  # relative to the experiment directory
    steps: list[SequenceStep] = Field(default_factory=list)


class SequenceData(ResultFile):
    """``sequence.json``: an experiment's deletion requests, method by method, request by request."""

    version: int = 1
    requests: list[str] = Field(default_factory=list)  # the entity of each request, in order
    retain_models: dict[str, str | None] = Field(default_factory=dict)  # "k" -> model without requests 1..k
    target: SequenceStep | None = None  # the target on all the requests (k = their number)
    runs: list[SequenceRun] = Field(default_factory=list)
    not_computed: dict[str, str] = Field(default_factory=dict)
