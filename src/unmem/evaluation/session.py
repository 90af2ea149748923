"""One loaded model on one benchmark's data, with memoised model calls the families share.

Families ask the session for teacher-forced scores and generations; a score or
generation two families need (the TOFU and MIA families both score the forget answers)
is computed once per evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from unmem.data.benchmarks import EvalData
from unmem.data.collate import PromptFormat
from unmem.errors import UnmemError
from unmem.evaluation.options import EvalOptions
from unmem.metrics import mia, scoring


def context_length(model: torch.nn.Module) -> int:
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return min(value, 4096)
    return 2048


class ModelSession:
    """A model + tokenizer + data + options; families share its memoised scores and generations."""

    def __init__(
        self, model: torch.nn.Module, tokenizer: Any, data: EvalData, opts: EvalOptions, batch_size: int
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.data = data
        self.opts = opts
        self.batch_size = batch_size
        self.fmt = PromptFormat.for_tokenizer(tokenizer, reference=opts.reference)
        self.max_length = context_length(model)
        self._memo: dict[tuple, Any] = {}

    def _cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def qa_scores(self, name: str, answer_field: str = "answer") -> list[scoring.TokenScores]:
        """Teacher-forced scores of ``answer_field`` of every record of QA set ``name``."""
        records = self.data.qa[name]
        return self._cached(
            ("qa", name, answer_field),
            lambda: scoring.answer_token_scores(
                self.model,
                self.tokenizer,
                [r["question"] for r in records],
                [r[answer_field] for r in records],
                self.fmt,
                batch_size=self.batch_size,
                max_length=self.max_length,
            ),
        )

    def perturbed_nlls(self, name: str) -> list[list[float]]:
        """Per record of QA set ``name``, the token-mean NLL of each perturbed answer."""
        records = self.data.qa[name]

        def compute() -> list[list[float]]:
            groups = scoring.grouped_answer_scores(
                self.model,
                self.tokenizer,
                [r["question"] for r in records],
                [list(r["perturbed_answer"]) for r in records],
                self.fmt,
                batch_size=self.batch_size,
                max_length=self.max_length,
            )
            return [[s.nll for s in group] for group in groups]

        return self._cached(("perturbed", name), compute)

    def answers(self, name: str) -> list[str]:
        """Greedy answers to the questions of QA set ``name``. unmem's plain template cuts them at the
        next question (a small model trained on the template goes on with one); the reference
        stops at eos only."""
        records = self.data.qa[name]
        stop = () if self.fmt.chat or self.fmt.reference else ("\nQuestion:",)
        return self._cached(
            ("answers", name),
            lambda: scoring.generate_answers(
                self.model,
                self.tokenizer,
                [r["question"] for r in records],
                self.fmt,
                max_new_tokens=self.opts.answer_tokens,
                batch_size=self.batch_size,
                stop=stop,
            ),
        )

    def text_scores(self, key: str, texts: Sequence[str]) -> list[scoring.TokenScores]:
        return self._cached(
            ("text", key),
            lambda: scoring.text_token_scores(
                self.model, self.tokenizer, texts, batch_size=self.batch_size, max_length=self.max_length
            ),
        )

    def membership_scores(self, side: str) -> tuple[list[scoring.TokenScores], list[str]]:
        """Scores and scored strings of the members ("forget") or non-members ("holdout")."""
        kind = self.data.membership_kind()
        if kind == "qa":
            records = self.data.qa[side]
            return self.qa_scores(side), [r["answer"] for r in records]
        if kind == "text":
            texts = self.data.privleak[side]
            return self.text_scores(f"privleak/{side}", texts), list(texts)
        raise UnmemError("membership inference needs forget and holdout QA, or PrivLeak passages")

    def privleak_scores(self, side: str) -> np.ndarray:
        """MUSE PrivLeak's Min-40% scores: passages when the data has them, else QA answers."""
        if self.data.privleak.get(side):
            scores = self.text_scores(f"privleak/{side}", self.data.privleak[side])
        else:
            scores = self.qa_scores(side)
        return mia.min_k_scores([s.logps for s in scores], k=0.4)


def num(value: Any) -> float | None:
    """A finite float, or None (NaN, inf and None all mean "not computed")."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


def sample_rows(set_name: str, records: Sequence[Any], **columns: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per sample: set, index, entity_id (when the record has one), then the columns."""
    rows = []
    for i, record in enumerate(records):
        row: dict[str, Any] = {"set": set_name, "index": i}
        if isinstance(record, dict) and record.get("entity_id") is not None:
            row["entity_id"] = record["entity_id"]
        for name, values in columns.items():
            row[name] = values[i]
        rows.append(row)
    return rows
