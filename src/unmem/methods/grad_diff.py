"""GradDiff: gradient ascent on forget plus gradient descent on retain.

Loss: L = −γ·NLL_f + α·R, with R = NLL_r (``retain_loss="nll"``) or the per-token
KL(π_ref ‖ π_θ) on retain answers (``"kl"``, needs the reference model). METHODS.md
baselines; Liu et al. 2022 "Continual learning and private unlearning"; defaults as
open-unlearning's GradDiff (γ = α = 1, NLL).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unmem.methods._common import (
    RETAIN_LOSSES,
    add_retain,
    check_choice,
    check_number,
    retain_needs,
    retain_reference,
)
from unmem.methods.base import LossInputs
from unmem.methods.registry import register_method


@dataclass
class GradDiffConfig:
    gamma: float = 1.0  # γ, weight of the forget (ascent) term
    alpha: float = 1.0  # α, weight of the retain term R; 0 turns GradDiff into GA
    retain_loss: str = "nll"  # R: "nll" on retain answers, or "kl" to the reference

    def __post_init__(self) -> None:
        check_number("gamma", self.gamma)
        check_number("alpha", self.alpha, strict=False)
        check_choice("retain_loss", self.retain_loss, RETAIN_LOSSES)


def grad_diff_loss(inputs: LossInputs, cfg: GradDiffConfig) -> tuple[torch.Tensor, dict[str, float]]:
    forget_nll = inputs.forget.nll()
    logs = {"forget_nll": float(forget_nll.detach())}
    loss = add_retain(-cfg.gamma * forget_nll, logs, inputs, cfg.alpha, cfg.retain_loss)
    return loss, logs


register_method(
    "grad_diff",
    GradDiffConfig,
    grad_diff_loss,
    description="Gradient ascent on forget + NLL (or KL) on retain.",
    needs_retain=True,
    needs_for=retain_needs,
    ref_outputs=retain_reference,
)
