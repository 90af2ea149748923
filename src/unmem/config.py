"""Validated configuration of an unlearning run (pydantic): CLI flags and YAML both land here.

The resolved config is saved next to every result, so a run can be repeated exactly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from unmem.errors import UnmemError
from unmem.io import read_text


class EarlyStop(BaseModel):
    """Stop when held-out perplexity rises above ``ratio`` × its value at the start (DI's rule)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    data: Path  # JSONL of passages (``text``) or QA pairs (``question``/``answer``)
    ratio: float = Field(1.03, gt=1.0)
    every: int = Field(10, gt=0)  # steps between checks


class CalibratedStop(BaseModel):
    """Retain-free calibrated stopping (``unmem.train.stopping``): stop where the forget set has
    become as unfamiliar as data the model never saw, and publish the weights of that point."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # QA pairs (question/answer) or passages (text) of the forget set's kind, never trained on;
    # None only in an experiment file or a recipe, where the benchmark's holdout split fills it in
    holdout: Path | None = None
    every: int = Field(5, gt=0)  # steps between checks (each scores forget, holdout and utility sets)
    # per-sample familiarity: answer NLL, Min-40% log-prob, or teacher-forced next-token accuracy
    # (memorised text: the model can lose confidence in a token while still ranking it first)
    score: Literal["nll", "min_k", "accuracy"] = "nll"
    band: float = Field(0.05, ge=0, lt=0.5)  # AUC within 0.5 ± band counts as "as unfamiliar"
    utility: Path | None = None  # perplexity guard set; None: the retain set when one is given
    max_utility_ratio: float = Field(1.1, gt=1.0)  # guard: its perplexity stays ≤ this × the start
    max_samples: int = Field(256, gt=0)  # cap per scored set, to keep checks cheap
    # Also require the forget prompts' greedy continuations to repeat their text no further (mean
    # exact-match tokens) than the holdout's (MUSE's VerbMem, extraction): one short greedy
    # generation per check. For memorised text, whose most confident collocations outlast the AUC.
    verbatim: bool = False
    # Verbatim first (copyright requests): an overshoot does not end the run while the forget prompts
    # are still continued further than the holdout's; the guard and the step limit still do. The
    # published check may then be far below AUC 0.5 (over-forgotten). Needs ``verbatim``.
    verbatim_first: bool = False
    stop: bool = True  # False: train to the end and still publish the selected point

    @model_validator(mode="after")
    def _verbatim_first_needs_verbatim(self) -> CalibratedStop:
        if self.verbatim_first and not self.verbatim:
            raise ValueError("verbatim_first needs verbatim: true (it waits for the verbatim check)")
        return self


class TrainingSettings(BaseModel):
    """Model, adaptation and optimisation settings shared by unlearning and fine-tuning."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # Model and adaptation
    lora: bool = False
    lora_r: int = Field(8, gt=0)
    lora_alpha: int = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: list[str] | None = None  # None: peft's default for the architecture
    gradient_checkpointing: bool = False
    device: str = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    trust_remote_code: bool = False
    chat_template: bool | None = None  # None: use the tokenizer's chat template if it has one
    # Optimisation
    lr: float = Field(1e-5, gt=0)
    epochs: int = Field(5, gt=0)
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    scheduler: Literal["cosine", "linear", "constant"] = "constant"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    max_length: int = Field(256, gt=8)
    seed: int = 0
    # Bookkeeping: a resumable checkpoint every N optimiser steps, keeping the newest ``keep_checkpoints``
    checkpoint_every: int | None = Field(None, gt=0)
    keep_checkpoints: int = Field(2, gt=0)


class UnlearnConfig(TrainingSettings):
    """Everything an unlearning run needs besides the data files.

    The optimisation defaults are the field's usual recipe (open-unlearning's TOFU
    default: lr 1e-5, 10 epochs, batch 32, weight decay 0.01, one warm-up epoch then
    linear decay). It was set for 7B-class models; small models need larger rates, and
    the recipes in ``unmem/configs`` say which and why.
    """

    method: str
    method_args: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(32, gt=0)
    scheduler: Literal["cosine", "linear", "constant"] = "linear"
    warmup_ratio: float = Field(0.1, ge=0, lt=1)  # one warm-up epoch of ten
    weight_decay: float = Field(0.01, ge=0)
    max_steps: int | None = Field(None, gt=0)
    early_stop: EarlyStop | None = None
    calibrated_stop: CalibratedStop | None = None
    # The frozen reference (methods that compare with the starting model): "cached" computes what the
    # method reads from it once per example before training (unmem.train.reference) and keeps no
    # model copy; "live" runs a frozen copy on every step, as the papers' code does. Same results to
    # float rounding.
    reference: Literal["cached", "live"] = "cached"
    reference_cache: Path | None = None  # cache folder; None: .unmem-cache next to the output
    fuse_passes: bool = True  # forget, retain and refusal batches in one forward pass

    @model_validator(mode="after")
    def _known_method(self) -> UnlearnConfig:
        from unmem.methods.registry import get_method

        get_method(self.method).make_config(self.method_args)
        return self


def describe_validation_error(error: ValidationError) -> str:
    """The first problem of a pydantic error as "field 'a.b': message (got value)"."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "config"
    return f"field '{field}': {first['msg']} (got {first.get('input')!r})"


def build_config(values: dict[str, Any], source: str = "command line") -> UnlearnConfig:
    try:
        return UnlearnConfig(**values)
    except ValidationError as exc:
        raise UnmemError(f"{source}: {describe_validation_error(exc)}") from None


class StrictLoader(yaml.SafeLoader):
    """YAML with two fixes for hand-written configs: duplicate keys are an error (PyYAML keeps the
    last silently), and YAML 1.2 floats such as ``1e-1`` are numbers (YAML 1.1 wants ``1.0e-1``)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (lines {seen[key]} and {line})", key_node.start_mark
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_scalar(raw: str) -> Any:
    """A command-line value as YAML reads it: ``1e-1`` → 0.1, ``true`` → True, ``[1, 2]`` → a list."""
    try:
        return yaml.load(raw, Loader=StrictLoader)
    except yaml.YAMLError:
        return raw


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise UnmemError(f"{path}: config file not found")
    try:
        data = yaml.load(read_text(path), Loader=StrictLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UnmemError(f"{path}{line}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise UnmemError(f"{path}: expected a mapping of settings at the top level")
    return data
