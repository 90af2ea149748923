"""The one small interface between the training loop and an unlearning method.

The loop runs the forward passes a method asks for (policy and frozen reference, on
forget / retain / "I don't know" batches, with hidden states of chosen layers) and
hands the resulting tensors to the method's loss function. A loss never calls a
model, so every loss is testable on hand-made tensors.

Alignment convention: ``logits[:, t]`` predicts ``labels[:, t]`` (the loop has already
shifted them); ``labels`` is -100 wherever no loss may be taken (prompt, padding).
Hidden states are *not* shifted: ``hidden[layer][:, t]`` belongs to input position t,
and ``attention_mask`` / ``answer_mask_in`` are aligned with them.

A reference Side looks the same whether the frozen reference ran live or its outputs
were cached before training (``unmem.train.reference``): logits, ``seq_logps()`` and
``hidden`` hold the same values to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from unmem.logprobs import IGNORE_INDEX, SENSITIVE_MARKER, at_least_float32, token_logps

__all__ = [
    "FOCUS_MODES",
    "HIDDEN",
    "IGNORE_INDEX",
    "LOGITS",
    "SENSITIVE_MARKER",
    "SEQ_LOGPS",
    "CachedReference",
    "LossInputs",
    "Side",
    "focus_weights",
    "token_logps",
]


# What a method may read from the frozen reference, per batch role (``MethodSpec.ref_outputs``).
SEQ_LOGPS = "seq_logps"  # summed answer log-probability per sequence (NPO, IdkDPO)
LOGITS = "logits"  # next-token logits at answer positions (KL terms, DI, EUL, Chen)
HIDDEN = "hidden"  # hidden states of the method's ``hidden_layers`` at every token (RMU)
REFERENCE_KINDS = (SEQ_LOGPS, LOGITS, HIDDEN)
# How a forget loss weights the answer's tokens (``focus_weights``).
FOCUS_MODES = ("none", "soft", "hard")


@dataclass
class CachedReference:
    """What a cached reference keeps besides logits and hidden states, laid out like the batch."""

    seq_logps: torch.Tensor | None = None  # (batch,) summed answer log-probability


@dataclass
class Side:
    """One model's outputs on one batch.

    For speed the loop computes logits only from the batch's first answer position on:
    ``label_offset`` label columns are dropped from ``logits``, ``labels`` and
    ``token_weights`` alike (no row has a label there), so every per-token tensor of a
    Side has the same width. A Side has no logits when the loss reads none (RMU's policy,
    a cached reference that only kept summed log-probs in ``cached``).
    """

    logits: torch.Tensor | None  # (batch, time-1-offset, vocab): logits[:, t] predicts labels[:, t]
    labels: torch.Tensor  # (batch, time-1-offset), IGNORE_INDEX outside the answer
    attention_mask: torch.Tensor  # (batch, time) for the unshifted inputs
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (batch, time, hidden)
    # (batch, time-1-offset) float weights per label position; 1 everywhere unless the data marks
    # sensitive spans (the focused variants of DI, EUL, Chen and FLAT weight them: ``focus_weights``).
    token_weights: torch.Tensor | None = None
    label_offset: int = 0  # label columns dropped at the start (all IGNORE_INDEX)
    cached: CachedReference | None = None  # a cached reference's summed log-probs
    _token_logps: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def label_mask(self) -> torch.Tensor:
        """(batch, time-1-offset) bool: positions that carry a label."""
        return self.labels != IGNORE_INDEX

    @property
    def answer_mask_in(self) -> torch.Tensor:
        """(batch, time) bool, aligned with inputs / hidden states: tokens of the answer."""
        mask = torch.zeros_like(self.attention_mask, dtype=torch.bool)
        mask[:, 1 + self.label_offset :] = self.label_mask
        return mask

    def _logits(self, what: str) -> torch.Tensor:
        if self.logits is None:
            raise ValueError(
                f"{what} needs logits, and this Side has none (a cached reference keeps only what the "
                "method declared in ref_outputs; a method with needs_logits=False gets no policy logits)"
            )
        return self.logits

    def token_logps(self) -> torch.Tensor:
        """(batch, time-1-offset) log p(label_t); 0 where there is no label. Computed once."""
        if self._token_logps is None:
            self._token_logps = token_logps(self._logits("token_logps"), self.labels)
        return self._token_logps

    def seq_logps(self) -> torch.Tensor:
        """(batch,) summed answer log-probability, log π(y|x)."""
        if self.logits is None and self.cached is not None and self.cached.seq_logps is not None:
            return self.cached.seq_logps
        return self.token_logps().sum(-1)

    def seq_nll(self) -> torch.Tensor:
        """(batch,) token-mean answer cross-entropy, NLL(y|x)."""
        mask = self.label_mask
        return -(self.token_logps().sum(-1)) / mask.sum(-1).clamp(min=1)

    def nll(self) -> torch.Tensor:
        """Scalar token-mean NLL over every answer token in the batch (HF's convention)."""
        mask = self.label_mask
        return -(self.token_logps().sum()) / mask.sum().clamp(min=1)


def masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ w·v / Σ w over a batch's tokens, for a 0/1 mask or float weights; 0 when all are 0."""
    weights = weights.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1e-8)


def focus_weights(side: Side, focus: str, focus_coeff: float) -> torch.Tensor:
    """(batch, time-1-offset) per-token weights of a forget loss, zero wherever there is no label.

    ``"none"``: 1 on every answer token. The focused variants read the sensitive spans the
    loop marked in ``token_weights``: ``"soft"`` puts ``focus_coeff`` on them and 1 elsewhere,
    ``"hard"`` 1 on them and 0 elsewhere. Why focus: the template words of an answer ("was
    born in", "works as") are shared with retain and with wrong answers; pushing them down
    costs utility and leaves the true answer ranked above the wrong ones.
    """
    mask = side.label_mask
    if focus == "none":
        return mask.float()
    if focus not in FOCUS_MODES:
        raise ValueError(f"unknown focus {focus!r}; known: {', '.join(FOCUS_MODES)}")
    if side.token_weights is None:
        raise ValueError(
            f"focus={focus!r} needs token weights: give the forget records a `sensitive` field "
            "(list of spans to forget), or use focus='none'"
        )
    if side.token_weights.shape != side.labels.shape:
        raise ValueError(
            f"token_weights has shape {tuple(side.token_weights.shape)}, expected the labels' "
            f"{tuple(side.labels.shape)} (shifted like the labels)"
        )
    sensitive = (side.token_weights.float() - SENSITIVE_MARKER).abs() < 1e-3
    weights = torch.where(sensitive, focus_coeff, 1.0) if focus == "soft" else sensitive.float()
    return weights * mask


def kl_on_answers(p_ref: Side, q_policy: Side, weights: torch.Tensor | None = None) -> torch.Tensor:
    """KL(π_ref ‖ π_θ) per answer token, averaged over answer tokens (or ``weights``) of the batch."""
    ref_logp = torch.log_softmax(at_least_float32(p_ref._logits("kl_on_answers")), dim=-1)
    pol_logp = torch.log_softmax(at_least_float32(q_policy._logits("kl_on_answers")), dim=-1)
    kl_tok = F.kl_div(pol_logp, ref_logp, log_target=True, reduction="none").sum(-1)  # (batch, time-1)
    return masked_mean(kl_tok, q_policy.label_mask if weights is None else weights)


@dataclass
class LossInputs:
    """Everything the loop computed for one step; fields a method did not ask for are None."""

    forget: Side | None  # policy on the forget batch (None only in EUL's retain-only epochs)
    ref_forget: Side | None = None  # frozen reference on the forget batch, if needs_ref
    retain: Side | None = None  # policy on the retain batch, if needs_retain
    ref_retain: Side | None = None  # reference on the retain batch, if needs_ref and needs_retain
    idk: Side | None = None  # policy on forget questions answered with a refusal, if needs_idk
    ref_idk: Side | None = None  # reference on the same, if needs_ref and needs_idk
    state: Any = None  # what the method's ``setup`` returned (e.g. RMU's random direction)


def retain_term(inputs: LossInputs, kind: str) -> torch.Tensor:
    """The retain regulariser R shared by the baselines: NLL on retain, or KL to the reference."""
    if inputs.retain is None:
        raise ValueError("retain term requested but no retain batch was computed (needs_retain=False?)")
    if kind == "nll":
        return inputs.retain.nll()
    if kind == "kl":
        if inputs.ref_retain is None:
            raise ValueError("retain_loss='kl' needs reference outputs on the retain batch")
        return kl_on_answers(inputs.ref_retain, inputs.retain)
    raise ValueError(f"unknown retain loss {kind!r}; known: nll, kl")
