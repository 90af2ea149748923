"""DI: Deliberate Imagination / UnDIAL, self-distillation from adjusted teacher logits
(Dong et al. 2024, "Unmemorization in Large Language Models via Self-Distillation and
Deliberate Imagination"; renamed UnDIAL). METHODS.md, seed method 1.

For every labelled answer position t with label x_t:
  ẑ_t = z_t^teacher − γ·onehot(x_t),  q_t = softmax(ẑ_t)
  L_DI = Σ_t w_t · (−Σ_v q_t(v) log p_θ(v | x_<t)) / Σ_t w_t
The teacher is the starting model (``ref_forget``, live or cached). Only the memorised token
loses mass: q_t(x_t) = p0·e^−γ / (p0·e^−γ + 1 − p0) with p0 the teacher's probability,
and the rest goes to the teacher's own alternatives ("imagination"). Positions labelled
-100 are never indexed (a safe index plus a mask) and carry no weight.

Weights w_t: 1 on every labelled token (``focus="none"``, the paper's default), or the
focused variant (``base.focus_weights``, shared with EUL, Chen and FLAT) from the record's
``sensitive`` spans: ``"soft"`` → focus_coeff on sensitive tokens, 1 elsewhere; ``"hard"`` → 1 / 0.

``lower`` (ours): where the teacher's label logit is lowered. "all" is the paper's; "sensitive"
lowers it only on the tokens of the record's ``sensitive`` spans and distils every other answer
token from the unchanged teacher, so the words an answer shares with every other answer are held
where they were. The ``focus`` weights choose which tokens are distilled, not which are lowered:
with "hard" the others are not distilled at all. Why it was tried: lowering every label moved the
first answer token of *all* questions (to "I", "Inequality of ...") and cost SmolLM2 its
world-facts answers; on SmolLM2 it kept utility only where it also forgot less
(docs/real-models.md gives the numbers).

Paper settings: γ = 3 (GPT-Neo, γ ∈ {3, 10} for the larger ones); UnDIAL on Llama-2-7B
uses β ∈ {3, 10, 30} for the same γ. No retain term in the paper; optional α·R here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unmem.methods._common import (
    RETAIN_LOSSES,
    add_retain,
    check_choice,
    check_focus,
    check_number,
    merge_outputs,
    retain_needs,
    retain_reference,
)
from unmem.methods.base import LOGITS, LossInputs, at_least_float32, focus_weights
from unmem.methods.registry import register_method

LOWERED = ("all", "sensitive")


@dataclass
class DIConfig:
    gamma: float = 3.0  # γ, how much the teacher's label logit is lowered (paper: 3, or 10)
    focus: str = "none"  # "none" | "soft" | "hard": up-weight tokens in sensitive spans
    focus_coeff: float = 10.0  # weight of sensitive tokens in the "soft" variant
    alpha: float = 0.0  # α, optional retain term R (the paper uses none)
    retain_loss: str = "nll"  # R: "nll" or "kl"
    lower: str = "all"  # whose label logit the teacher lowers: "all" (paper) or "sensitive" (ours)

    def __post_init__(self) -> None:
        check_number("gamma", self.gamma, strict=False)
        check_focus(self.focus, self.focus_coeff)
        check_choice("lower", self.lower, LOWERED)
        check_number("alpha", self.alpha, strict=False)
        check_choice("retain_loss", self.retain_loss, RETAIN_LOSSES)


def di_loss(inputs: LossInputs, cfg: DIConfig) -> tuple[torch.Tensor, dict[str, float]]:
    forget, teacher = inputs.forget, inputs.ref_forget
    if teacher is None:
        raise ValueError("di needs the teacher (reference model) logits on the forget batch")
    mask = forget.label_mask  # (batch, time-1)
    safe_labels = forget.labels.masked_fill(~mask, 0)  # never index -100
    # ẑ = z_teacher − γ·onehot(label), applied only where there is a label (lower="sensitive":
    # only in the sensitive spans; the other positions are distilled from the teacher unchanged).
    lowered = mask if cfg.lower == "all" else focus_weights(forget, "hard", 1.0) > 0
    adjusted = at_least_float32(teacher.logits.detach())
    penalty = (-cfg.gamma * lowered.to(adjusted.dtype)).unsqueeze(-1)  # (batch, time-1, 1)
    adjusted = adjusted.scatter_add(-1, safe_labels.unsqueeze(-1), penalty)
    target = torch.softmax(adjusted, dim=-1)  # q_t, (batch, time-1, vocab)
    logp = torch.log_softmax(at_least_float32(forget.logits), dim=-1)
    ce_tok = -(target * logp).sum(-1)  # (batch, time-1) soft-label cross-entropy
    weights = focus_weights(forget, cfg.focus, cfg.focus_coeff)
    distill = (ce_tok * weights).sum() / weights.sum().clamp(min=1e-8)
    label_target = target.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)  # q_t(x_t)
    n_labels = mask.sum().clamp(min=1)
    logs = {
        "di_ce": float(distill.detach()),
        "forget_nll": float(forget.nll().detach()),
        "target_label_prob": float((label_target * mask).sum() / n_labels),
        "weighted_tokens": float((weights > 0).sum()),
    }
    loss = add_retain(distill, logs, inputs, cfg.alpha, cfg.retain_loss)
    return loss, logs


register_method(
    "di",
    DIConfig,
    di_loss,
    description="Deliberate Imagination (UnDIAL): distil from a teacher whose label logit is lowered by γ.",
    needs_ref=True,
    needs_for=retain_needs,
    ref_outputs=lambda cfg: merge_outputs({"forget": {LOGITS}}, retain_reference(cfg)),
)
