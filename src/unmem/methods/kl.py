"""KL: gradient ascent on forget, KL to the frozen reference on retain.

Loss: L = −γ·NLL_f + α·KL(π_ref ‖ π_θ), the KL taken per retain answer token and
averaged (METHODS.md baselines; TOFU's "KL" baseline, Maini et al. 2024). TOFU uses
γ = α = 1; the weights are exposed for parity with GradDiff.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unmem.methods._common import add_retain, check_number
from unmem.methods.base import LOGITS, LossInputs
from unmem.methods.registry import register_method


@dataclass
class KLConfig:
    gamma: float = 1.0  # γ, weight of the forget (ascent) term
    alpha: float = 1.0  # α, weight of KL(π_ref ‖ π_θ) on retain

    def __post_init__(self) -> None:
        check_number("gamma", self.gamma)
        check_number("alpha", self.alpha, strict=False)


def kl_loss(inputs: LossInputs, cfg: KLConfig) -> tuple[torch.Tensor, dict[str, float]]:
    forget_nll = inputs.forget.nll()
    logs = {"forget_nll": float(forget_nll.detach())}
    loss = add_retain(-cfg.gamma * forget_nll, logs, inputs, cfg.alpha, "kl")
    return loss, logs


register_method(
    "kl",
    KLConfig,
    kl_loss,
    description="Gradient ascent on forget + KL to the reference on retain.",
    needs_ref=True,
    needs_retain=True,
    needs_for=lambda cfg: {"retain": cfg.alpha > 0},
    ref_outputs=lambda cfg: {"retain": {LOGITS}} if cfg.alpha > 0 else {},
)
