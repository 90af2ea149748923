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
from unmem.data.collate import Example, PromptFormat, encode_window, warn_truncated
from unmem.data.windows import continuation_text, window_error
from unmem.errors import UnmemError
from unmem.evaluation.options import EvalOptions
from unmem.metrics import mia, scoring
from unmem.models import context_length


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

    def window_examples(self, name: str) -> list[Example]:
        """Text windows of ``verbmem[name]`` as scored: ``[bos] prompt continuation``, the continuation
        cut to ``verbmem_max_new_tokens`` tokens (MUSE's budget). A window longer than the model's
        context loses the start of its prompt (one warning counts them); one whose continuation alone
        does not fit is an error naming its file."""
        records = self.data.verbmem[name]

        def compute() -> list[Example]:
            cap = self.opts.verbmem_max_new_tokens
            examples = [
                encode_window(
                    self.tokenizer, record, max_length=self.max_length, continuation_tokens=cap, index=i
                )
                for i, record in enumerate(records)
            ]
            for record, example in zip(records, examples, strict=True):
                if example.truncated == "answer":
                    raise window_error(
                        record,
                        f"does not fit the model's context ({self.max_length} tokens) even without its prompt",
                    )
            warn_truncated(examples, self.max_length)
            return examples

        return self._cached(("window_examples", name), compute)

    def window_scores(self, name: str) -> list[scoring.TokenScores]:
        """Teacher-forced scores of each window's continuation given its prompt, with the
        log-probabilities of the extraction options' sampling distribution."""
        return self._cached(
            ("windows", name),
            lambda: scoring.score_examples(
                self.model,
                self.window_examples(name),
                scoring.pad_token_id(self.tokenizer),
                batch_size=self.batch_size,
                sampling=(self.opts.extraction_temperature, self.opts.extraction_top_k),
                desc="scoring windows",
            ),
        )

    def window_truths(self, name: str) -> list[list[int]]:
        """The scored continuation ids of each window (after its prompt, at most the MUSE budget)."""
        return [example.split()[1] for example in self.window_examples(name)]

    def window_continuations(self, name: str) -> list[list[int]]:
        """Greedy continuation ids of each window's prompt, ``verbmem_max_new_tokens`` at most (MUSE)."""

        def compute() -> list[list[int]]:
            prompts = [example.split()[0] for example in self.window_examples(name)]
            return scoring.generate_ids(
                self.model,
                prompts,
                max_new_tokens=self.opts.verbmem_max_new_tokens,
                pad_token_id=scoring.pad_token_id(self.tokenizer),
                eos_token_id=getattr(self.tokenizer, "eos_token_id", None),
                batch_size=self.batch_size,
                desc="continuing windows",
            )

        return self._cached(("window_continuations", name), compute)

    def membership_scores(self, side: str) -> tuple[list[scoring.TokenScores], list[str]]:
        """Scores and scored strings of the members ("forget") or non-members ("holdout")."""
        kind = self.data.membership_kind()
        if kind == "qa":
            records = self.data.qa[side]
            return self.qa_scores(side), [r["answer"] for r in records]
        if kind == "text":
            texts = self.data.privleak[side]
            return self.text_scores(f"privleak/{side}", texts), list(texts)
        if kind == "windows":
            return self.window_scores(side), [continuation_text(r) for r in self.data.verbmem[side]]
        raise UnmemError(
            "membership inference needs forget and holdout QA, PrivLeak passages, or forget and holdout texts"
        )

    def privleak_scores(self, side: str) -> np.ndarray:
        """MUSE PrivLeak's Min-40% scores: passages when the data has them, else QA answers, else the
        continuations of text windows."""
        if self.data.privleak.get(side):
            scores = self.text_scores(f"privleak/{side}", self.data.privleak[side])
        elif self.data.membership_kind() == "windows":
            scores = self.window_scores(side)
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
