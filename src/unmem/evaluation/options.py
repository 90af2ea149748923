"""The evaluation's settings: ``EvalOptions`` (knobs that change numbers, part of every cache key)
and ``EvalConfig``, the one evaluation config ``unmem eval``, Python callers and experiment
files (their ``eval:`` section) all fill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from unmem.errors import UnmemError

# Bump when a formula or convention changes: invalidates every cache.
# 2: truth ratio on real_world / world_facts against the answer; eos left out of exact
#    memorisation and extraction strength (both as TOFU's reference evaluator).
# 3: memorisation of text windows (forget / retain / holdout: accuracy, exact-match length,
#    k-sample extraction, VerbMem); EL_n targets join prompt and gt as the text has them.
EVAL_VERSION = 3


class OptionError(UnmemError, ValueError):
    """A bad eval option. A ValueError too, so pydantic reports it with the option's key path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"eval option {field} {message}")
        self.field = field


CONVENTIONS = ("unmem", "open-unlearning")
# Greedy QA answers (TOFU ROUGE): unmem's default keeps evaluation quick on CPU; TOFU's
# reference generates up to 200 new tokens (its answers are one or two sentences).
ANSWER_TOKENS = {"unmem": 64, "open-unlearning": 200}
POSITIVE_OPTIONS = (
    "extraction_samples",
    "extraction_tokens",
    "relearn_epochs",
    "relearn_batch_size",
    "sample_k",
    "in_context_facts",
    "knowmem_max_new_tokens",
    "verbmem_max_new_tokens",
    "el_stride",
    "el_max_tokens",
    "pii_max_new_tokens",
    "general_prefix_words",
    "general_max_new_tokens",
)


@dataclass(frozen=True)
class EvalOptions:
    """Knobs that change numbers (so they are part of every cache key)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # unknown keys in experiment files are errors

    # unmem's sequences and definitions, or those of TOFU's reference evaluator (open-unlearning)
    # for the TOFU family: its token sequences, generation and extraction strength (docs/conventions.md).
    convention: Literal["unmem", "open-unlearning"] = "unmem"
    max_new_tokens: int | None = None  # greedy QA answers (TOFU ROUGE); None: ANSWER_TOKENS[convention]
    knowmem_shots: int = 3  # MUSE uses 10; 3 keeps prompts inside small models' context
    knowmem_max_new_tokens: int = 32  # MUSE: 32
    verbmem_max_new_tokens: int = 128  # MUSE: 128
    min_k: float = 0.4  # Min-K% fraction; PrivLeak always uses MUSE's 0.4
    # PrivLeak without a retain model: the retrain model's MUSE AUC as a number, as MUSE's own
    # eval.py takes it from its constants (AUC_RETRAIN) for the published news / books models.
    privleak_retain_auc: float | None = None
    gradnorm_samples: int = 64  # per side: one backward pass per sample
    # k-sample extraction on text windows (Hayes et al. 2024): k samples, the first n continuation
    # tokens, sampled as Carlini et al. 2021 extracted training data (temperature 1, top-40).
    extraction_samples: int = 100
    extraction_tokens: int = 50
    extraction_temperature: float = 1.0
    extraction_top_k: int | None = 40
    el_orders: tuple[int, ...] = (3, 5, 10)  # DI reports EL_3, EL_5, EL_10
    el_stride: int = 8
    el_max_tokens: int = 64
    pii_max_new_tokens: int = 48
    general_prefix_words: int = 8
    general_max_new_tokens: int = 48
    embedding: bool = True  # embedding similarity when the package is installed
    # The robustness audit (the robustness family; docs/robustness.md). Attacks to run (None: all).
    robust_attacks: tuple[str, ...] | None = None
    # The relearning budget: epochs over each relearning attack's data (open-unlearning's meta-
    # evaluation relearns 1 epoch), at a constant rate near the one the model was fine-tuned at
    # (the field: 2e-5 for TOFU's 7B models fine-tuned at 1e-5; the world's small models: 3e-3).
    relearn_epochs: int = 1
    relearn_lr: float = 1e-3
    relearn_batch_size: int = 8
    sample_k: int = 5  # answers sampled at temperature 1 per forget question (any-of-k extraction)
    in_context_facts: int = 2  # other facts of the same person stated before the question

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise OptionError(
                "convention", f"must be one of {', '.join(CONVENTIONS)}, got {self.convention!r}"
            )
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise OptionError("max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        for name in POSITIVE_OPTIONS:
            if getattr(self, name) < 1:
                raise OptionError(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("knowmem_shots", "gradnorm_samples"):
            if getattr(self, name) < 0:
                raise OptionError(name, f"must be >= 0, got {getattr(self, name)}")
        if self.privleak_retain_auc is not None and not 0 < self.privleak_retain_auc <= 1:
            raise OptionError(
                "privleak_retain_auc", f"must be an AUC in (0, 1], got {self.privleak_retain_auc}"
            )
        if not (math.isfinite(self.extraction_temperature) and self.extraction_temperature > 0):
            raise OptionError("extraction_temperature", f"must be > 0, got {self.extraction_temperature}")
        if self.extraction_top_k is not None and self.extraction_top_k < 1:
            raise OptionError("extraction_top_k", f"must be >= 1 or null, got {self.extraction_top_k}")
        if not 0 < self.relearn_lr < 1:  # NaN fails this too
            raise OptionError("relearn_lr", f"must be in (0, 1), got {self.relearn_lr}")
        if self.robust_attacks is not None and not self.robust_attacks:
            raise OptionError("robust_attacks", "must name at least one attack (or be left out for all)")
        if not 0 < self.min_k <= 1:
            raise OptionError("min_k", f"must be in (0, 1], got {self.min_k}")
        if not self.el_orders or min(self.el_orders) < 1:
            raise OptionError("el_orders", f"must be n-gram orders >= 1, got {self.el_orders}")

    @property
    def reference(self) -> bool:
        """TOFU's reference evaluator's conventions (open-unlearning)."""
        return self.convention == "open-unlearning"

    @property
    def answer_tokens(self) -> int:
        """New tokens of a greedy QA answer."""
        return self.max_new_tokens if self.max_new_tokens is not None else ANSWER_TOKENS[self.convention]


class EvalConfig(BaseModel):
    """How to evaluate: families, batching, device and the options above."""

    model_config = ConfigDict(extra="forbid")

    metrics: list[str] | None = None  # metric families; None: every family the data supports
    batch_size: int = Field(32, gt=0)  # scoring and generation
    max_samples: int | None = Field(None, gt=0)  # cap per evaluation set (quick looks)
    device: str = "auto"
    dtype: str = "auto"  # auto: bfloat16 on GPU, float32 on CPU
    # torch CPU threads for the call (None: leave torch's). 1 is the fastest for small models
    # when the cores are shared: two threads on two busy cores ran a world evaluation 7x slower.
    threads: int | None = Field(None, gt=0)
    lm_eval_tasks: Path | None = None  # lm-eval task YAMLs (the lm_eval family)
    # Run Python that is not unmem's: a model's own code (auto_map) or what lm-eval task files
    # name (``!function``). Off by default; it changes no number, so no cache key holds it.
    trust_remote_code: bool = False
    options: EvalOptions = Field(default_factory=EvalOptions)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not value.startswith("cuda:"):
            raise ValueError(f"must be auto, cpu or cuda[:N], got '{value}'")
        return value
