"""When to stop unlearning: held-out perplexity (DI's rule) and retain-free calibrated stopping.

Calibrated stopping needs no retain model. A user can always hold out data of the same
kind that the model never saw (for the world: the holdout split). Every ``every`` steps
it scores the forget set and that holdout set with the model being unlearned and
measures how well the score separates them: the membership ROC-AUC (forget = members).
A memorised forget set gives AUC ≈ 1; a model that never saw it, ≈ 0.5 — exactly what
the retain model shows. AUC below 0.5 means over-forgetting: the forget set has become
*less* likely than never-seen data, which is itself a membership signal (MUSE's
PrivLeak > 0). A utility guard watches the perplexity of a set to keep (by default the
retain set) against its value at the start.

The rule (:func:`calibrated_decision`) stops at the first check where the AUC has
entered the band 0.5 ± ``band``, has fallen below it (overshoot), or the guard fails;
:func:`select_check` then picks, among the checks that kept the guard, the one whose
AUC is closest to 0.5 (the earlier one on a tie). Its weights were kept when it was
measured, and they are what the run publishes.

With ``verbatim``, a check also continues each forget and holdout prompt greedily and
measures how many tokens repeat the text (the evaluation's exact-match length). Inside the
band the rule then goes on while the forget mean is longer than the holdout's, and the
selection prefers checks where it is not: on memorised text a model's most confident
collocations ("THE SOFTWARE IS" → " PROVIDED") keep their rank after most tokens have lost
theirs, so the AUC reaches 0.5 while greedy decoding still reproduces them. With
``verbatim_first`` an overshoot does not stop the run either until the forget prompts repeat no
further than the holdout's (or the guard fails): the verbatim bar before the calibration.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from unmem.config import CalibratedStop, EarlyStop
from unmem.data.collate import Example, collate
from unmem.errors import UnmemWarning
from unmem.logprobs import token_logps
from unmem.metrics.extraction import exact_match_lengths
from unmem.metrics.scoring import generate_ids

MIN_K_FRACTION = 0.4  # MUSE's Min-40%, as PrivLeak uses
# Greedy tokens a verbatim check generates: an exact match is counted up to this length (the
# longest on SmolLM2's memorised MIT/BSD windows is 6 tokens before unlearning).
VERBATIM_TOKENS = 32


@torch.no_grad()
def token_scores_of(
    model: torch.nn.Module, examples: Sequence[Example], pad_token_id: int, batch_size: int = 32
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per example, its labelled tokens' log-probabilities and whether each is the argmax
    (eval mode, no gradients): one forward pass serves every familiarity score."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad_token_id)
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits[:, :-1]
        labels = batch["labels"][:, 1:].to(device)
        logps = token_logps(logits, labels).cpu().numpy()
        hits = (logits.argmax(dim=-1) == labels).cpu().numpy()
        mask = (labels != -100).cpu().numpy()
        out.extend((row[keep], hit[keep]) for row, hit, keep in zip(logps, hits, mask, strict=True))
    model.train(was_training)
    return out


def token_logps_of(
    model: torch.nn.Module, examples: Sequence[Example], pad_token_id: int, batch_size: int = 32
) -> list[np.ndarray]:
    """Per example, the log-probabilities of its labelled tokens (eval mode, no gradients)."""
    return [logps for logps, _ in token_scores_of(model, examples, pad_token_id, batch_size)]


def perplexity(model: torch.nn.Module, examples: Sequence[Example], pad_token_id: int) -> float:
    logps = token_logps_of(model, examples, pad_token_id)
    tokens = sum(len(row) for row in logps)
    return math.exp(-sum(float(row.sum()) for row in logps) / max(tokens, 1))


def exact_match_mean(
    model: torch.nn.Module, examples: Sequence[Example], pad_token_id: int, batch_size: int = 32
) -> float:
    """Mean number of tokens the greedy continuation of each example's prompt (its unlabelled
    start) shares with its labelled tokens, at most ``VERBATIM_TOKENS`` (eval mode, no gradients)."""
    prompts, truths = [], []
    for prompt, truth in (example.split() for example in examples):
        if prompt and truth:  # a prompt to continue, and labels to repeat
            prompts.append(prompt)
            truths.append(truth[:VERBATIM_TOKENS])
    if not prompts:
        raise ValueError("verbatim checks need examples with a prompt and labelled tokens after it")
    generated = generate_ids(
        model,
        prompts,
        max_new_tokens=[len(truth) for truth in truths],
        pad_token_id=pad_token_id,
        eos_token_id=None,
        batch_size=batch_size,
        desc="verbatim check",
    )
    return float(exact_match_lengths(generated, truths).value)


def familiarity(
    logps: Sequence[np.ndarray], score: str, hits: Sequence[np.ndarray] | None = None
) -> np.ndarray:
    """Per-sample membership score, higher = more familiar: −NLL, the Min-40% mean log-prob, or
    (``accuracy``, which needs ``hits``) the share of tokens the model ranks first."""
    if score == "accuracy":
        if hits is None:
            raise ValueError("score 'accuracy' needs the per-token hits")
        return np.array([row.mean() if len(row) else 0.0 for row in hits], dtype=float)
    if score == "nll":
        return np.array([row.mean() if len(row) else 0.0 for row in logps])
    scores = []
    for row in logps:
        k = max(1, math.ceil(MIN_K_FRACTION * len(row)))
        scores.append(np.sort(row)[:k].mean() if len(row) else 0.0)
    return np.array(scores)


def membership_auc(members: np.ndarray, nonmembers: np.ndarray) -> tuple[float, float]:
    """ROC-AUC of telling members from non-members by score, and the Mann–Whitney two-sided p."""
    from scipy.stats import mannwhitneyu

    result = mannwhitneyu(members, nonmembers, alternative="two-sided")
    return float(result.statistic / (len(members) * len(nonmembers))), float(result.pvalue)


@dataclass(frozen=True)
class Check:
    """One measurement of the calibrated rule."""

    step: int
    auc: float  # membership AUC, forget vs holdout (0.5: indistinguishable)
    p_value: float  # Mann–Whitney, forget vs holdout scores
    utility_ratio: float  # perplexity of the kept set / its value at step 0 (1.0 without one)
    # mean greedy exact-match tokens of forget and holdout prompts (None: ``verbatim`` is off)
    forget_exact: float | None = None
    holdout_exact: float | None = None

    @property
    def verbatim_measured(self) -> bool:
        return self.forget_exact is not None and self.holdout_exact is not None

    @property
    def verbatim_kept(self) -> bool:
        """The forget set is continued verbatim no further than the holdout (or not measured)."""
        return not self.verbatim_measured or self.forget_exact <= self.holdout_exact


def calibrated_decision(last: Check, config: CalibratedStop) -> str | None:
    """Why to stop after ``last``, or None to go on (``config.stop`` aside). ``verbatim_first``:
    an overshoot stops only once the verbatim check is kept too."""
    band, max_utility_ratio = config.band, config.max_utility_ratio
    if last.utility_ratio > max_utility_ratio:
        return f"utility guard: perplexity {last.utility_ratio:.3f}x its start > {max_utility_ratio}x"
    verbatim = (
        f", exact match {last.forget_exact:.2f} ≤ {last.holdout_exact:.2f}"
        if last.verbatim_measured and last.verbatim_kept
        else ""
    )
    if last.auc < 0.5 - band and (last.verbatim_kept or not config.verbatim_first):
        return (
            "overshoot: forget set less familiar than holdout "
            f"(AUC {last.auc:.3f} < {0.5 - band:.3f}{verbatim})"
        )
    if 0.5 - band <= last.auc <= 0.5 + band and last.verbatim_kept:
        return f"forget set as unfamiliar as holdout (AUC {last.auc:.3f} within 0.5 ± {band}{verbatim})"
    return None


def select_check(history: Sequence[Check], max_utility_ratio: float) -> Check:
    """The check to publish: guard kept, verbatim kept if any check kept it, AUC closest to 0.5,
    earliest on a tie (step 0 counts)."""
    kept = [check for check in history if check.utility_ratio <= max_utility_ratio] or [history[0]]
    kept = [check for check in kept if check.verbatim_kept] or kept
    return min(kept, key=lambda check: (round(abs(check.auc - 0.5), 9), check.step))


class CalibratedStopping:
    """The calibrated rule in the loop: measure, decide, and say which weights to keep."""

    name = "calibrated"

    def __init__(
        self,
        config: CalibratedStop,
        forget: Sequence[Example],
        holdout: Sequence[Example],
        utility: Sequence[Example] | None,
        pad_token_id: int,
    ) -> None:
        self.config = config
        self.forget, self.holdout, self.utility = forget, holdout, utility
        self.pad = pad_token_id
        self.every = config.every
        self.history: list[Check] = []
        self.utility_start: float | None = None

    def _familiarity(self, model: torch.nn.Module, examples: Sequence[Example]) -> np.ndarray:
        scored = token_scores_of(model, examples, self.pad)
        return familiarity([logps for logps, _ in scored], self.config.score, [hits for _, hits in scored])

    def _measure(self, model: torch.nn.Module, step: int) -> Check:
        members = self._familiarity(model, self.forget)
        nonmembers = self._familiarity(model, self.holdout)
        auc, p_value = membership_auc(members, nonmembers)
        ratio = 1.0
        if self.utility:
            ppl = perplexity(model, self.utility, self.pad)
            self.utility_start = self.utility_start or ppl
            ratio = ppl / self.utility_start
        if not self.config.verbatim:
            return Check(step, auc, p_value, ratio)
        exact = [exact_match_mean(model, examples, self.pad) for examples in (self.forget, self.holdout)]
        return Check(step, auc, p_value, ratio, *exact)

    def start(self, model: torch.nn.Module, state: dict[str, Any] | None) -> bool:
        """Measure step 0 (or restore a resumed run's checks); True if step 0 is the best so far."""
        if state:
            self.history = [Check(**check) for check in state["history"]]
            self.utility_start = state["utility_start"]
            return False
        self.history = [self._measure(model, 0)]
        start = self.history[0]
        if calibrated_decision(start, self.config) is not None:
            # The rule would stop at the first check: say why the run ends at once.
            warnings.warn(
                f"calibrated stopping: at step 0 the forget set already scores as unfamiliar as the "
                f"holdout set (AUC {start.auc:.3f} by score '{self.config.score}'); either nothing is "
                "memorised, or this score cannot see it (accuracy cannot on short templated answers, "
                "docs/stopping.md)",
                UnmemWarning,
                stacklevel=2,
            )
        return True

    def check(self, step: int, model: torch.nn.Module) -> tuple[dict[str, float], str | None, bool]:
        """(fields for the log, reason to stop or None, whether these weights are the best so far)."""
        current = self._measure(model, step)
        self.history.append(current)
        best = select_check(self.history, self.config.max_utility_ratio)
        reason = calibrated_decision(current, self.config)
        fields = {"stop_auc": current.auc, "stop_p": current.p_value, "utility_ratio": current.utility_ratio}
        if current.verbatim_measured:
            fields |= {"stop_exact_forget": current.forget_exact, "stop_exact_holdout": current.holdout_exact}
        return fields, reason if self.config.stop else None, best is current

    def selected(self) -> Check:
        return select_check(self.history, self.config.max_utility_ratio)

    def state(self) -> dict[str, Any]:
        return {"history": [asdict(c) for c in self.history], "utility_start": self.utility_start}

    def summary(self, stop_reason: str) -> dict[str, Any]:
        chosen = self.selected()
        why = (
            f"step {chosen.step}: AUC {chosen.auc:.3f} closest to 0.5 of {len(self.history)} checks "
            f"with utility within {self.config.max_utility_ratio}x"
        )
        if chosen.verbatim_measured:
            kept = "no longer than" if chosen.verbatim_kept else "still longer than (no check kept it)"
            why += f"; forget exact match {chosen.forget_exact:.2f} tokens, {kept} holdout's {chosen.holdout_exact:.2f}"
        return {
            "rule": "calibrated",
            "selected_step": chosen.step,
            "selected": asdict(chosen),
            "why": why,
            "stop_reason": stop_reason,
            "band": self.config.band,
            "score": self.config.score,
            "verbatim": self.config.verbatim,
            "history": [asdict(c) for c in self.history],
        }


class PerplexityStop:
    """DI's rule: stop once held-out perplexity exceeds ``ratio`` × its value at the start."""

    name = "perplexity"

    def __init__(self, config: EarlyStop, heldout: Sequence[Example], pad_token_id: int) -> None:
        self.config = config
        self.heldout = heldout
        self.pad = pad_token_id
        self.every = config.every
        self.start_ppl: float | None = None

    def start(self, model: torch.nn.Module, state: dict[str, Any] | None) -> bool:
        self.start_ppl = state["start_ppl"] if state else perplexity(model, self.heldout, self.pad)
        return False

    def check(self, step: int, model: torch.nn.Module) -> tuple[dict[str, float], str | None, bool]:
        ppl = perplexity(model, self.heldout, self.pad)
        reason = None
        if ppl > self.config.ratio * (self.start_ppl or ppl):
            reason = f"early stop: held-out perplexity {ppl:.3f} > {self.config.ratio} x {self.start_ppl:.3f}"
        return {"heldout_ppl": ppl}, reason, False

    def state(self) -> dict[str, Any]:
        return {"start_ppl": self.start_ppl}

    def summary(self, stop_reason: str) -> dict[str, Any]:
        return {"rule": "perplexity", "heldout_ppl_start": self.start_ppl, "stop_reason": stop_reason}
