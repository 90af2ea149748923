"""The one small interface between the training loop and an unlearning method.

The loop runs the forward passes a method asks for (policy and frozen reference, on
forget / retain / "I don't know" batches, with hidden states of chosen layers) and
hands the resulting tensors to the method's loss function. A loss never calls a
model, so every loss is testable on hand-made tensors.

Alignment convention: ``logits[:, t]`` predicts ``labels[:, t]`` (the loop has already
shifted them); ``labels`` is -100 wherever no loss may be taken (prompt, padding).
Hidden states are *not* shifted: ``hidden[layer][:, t]`` belongs to input position t,
and ``attention_mask`` / ``answer_mask_in`` are aligned with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from unmem.logprobs import IGNORE_INDEX, SENSITIVE_MARKER, token_logps

__all__ = ["IGNORE_INDEX", "SENSITIVE_MARKER", "LossInputs", "Side", "token_logps"]


@dataclass
class Side:
    """One model's outputs on one batch."""

    logits: torch.Tensor  # (batch, time-1, vocab): logits[:, t] predicts labels[:, t]
    labels: torch.Tensor  # (batch, time-1), IGNORE_INDEX outside the answer
    attention_mask: torch.Tensor  # (batch, time) for the unshifted inputs
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (batch, time, hidden)
    # (batch, time-1) float weights per label position; 1 everywhere unless the data marks
    # sensitive spans (DI's focused variant up-weights them).
    token_weights: torch.Tensor | None = None

    @property
    def label_mask(self) -> torch.Tensor:
        """(batch, time-1) bool: positions that carry a label."""
        return self.labels != IGNORE_INDEX

    @property
    def answer_mask_in(self) -> torch.Tensor:
        """(batch, time) bool, aligned with inputs / hidden states: tokens of the answer."""
        mask = torch.zeros_like(self.attention_mask, dtype=torch.bool)
        mask[:, 1:] = self.label_mask
        return mask

    def token_logps(self) -> torch.Tensor:
        """(batch, time-1) log p(label_t); 0 where there is no label."""
        return token_logps(self.logits, self.labels)

    def seq_logps(self) -> torch.Tensor:
        """(batch,) summed answer log-probability, log π(y|x)."""
        return self.token_logps().sum(-1)

    def seq_nll(self) -> torch.Tensor:
        """(batch,) token-mean answer cross-entropy, NLL(y|x)."""
        mask = self.label_mask
        return -(self.token_logps().sum(-1)) / mask.sum(-1).clamp(min=1)

    def nll(self) -> torch.Tensor:
        """Scalar token-mean NLL over every answer token in the batch (HF's convention)."""
        mask = self.label_mask
        return -(self.token_logps().sum()) / mask.sum().clamp(min=1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def kl_on_answers(p_ref: Side, q_policy: Side) -> torch.Tensor:
    """KL(π_ref ‖ π_θ) per answer token, averaged over answer tokens of the batch."""
    ref_logp = torch.log_softmax(p_ref.logits.float(), dim=-1)
    pol_logp = torch.log_softmax(q_policy.logits.float(), dim=-1)
    kl_tok = F.kl_div(pol_logp, ref_logp, log_target=True, reduction="none").sum(-1)  # (batch, time-1)
    return masked_mean(kl_tok, q_policy.label_mask)


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
