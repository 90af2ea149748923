"""SimNPO: reference-free NPO with length-normalised log-probability (Fan et al. 2024,
"Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning", Eq. 4).

Loss: L = γ·[−(2/β)·E_f log σ(β·(NLL_f − δ))] + α·R, NLL_f the per-sequence token-mean
answer NLL (so −NLL_f = log π_θ(y|x)/|y|, the paper's normalised reward).

Weights follow open-unlearning's SimNPO (whose defaults METHODS.md quotes: β = 4.5,
δ = 0, γ = 0.125): there **γ scales the forget term** and α = 1 scales the retain term
(``loss = gamma * forget_loss + alpha * retain_loss``). The paper's own symbol γ is the
reward margin, which is δ here (paper's best setting: 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

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
class SimNPOConfig:
    beta: float = 4.5  # β, inverse temperature
    delta: float = 0.0  # δ, reward margin (the paper's γ)
    gamma: float = 0.125  # γ, weight of the SimNPO forget term (open-unlearning convention)
    alpha: float = 1.0  # α, weight of the retain term R
    retain_loss: str = "nll"  # R: "nll" or "kl" (the latter needs the reference model)

    def __post_init__(self) -> None:
        check_number("beta", self.beta)
        check_number("delta", self.delta, low=float("-inf"))
        check_number("gamma", self.gamma)
        check_number("alpha", self.alpha, strict=False)
        check_choice("retain_loss", self.retain_loss, RETAIN_LOSSES)


def simnpo_loss(inputs: LossInputs, cfg: SimNPOConfig) -> tuple[torch.Tensor, dict[str, float]]:
    forget_nll_seq = inputs.forget.seq_nll()  # (batch,)
    simnpo = -(2.0 / cfg.beta) * F.logsigmoid(cfg.beta * (forget_nll_seq - cfg.delta)).mean()
    logs = {"simnpo": float(simnpo.detach()), "forget_nll": float(forget_nll_seq.detach().mean())}
    loss = add_retain(cfg.gamma * simnpo, logs, inputs, cfg.alpha, cfg.retain_loss)
    return loss, logs


register_method(
    "simnpo",
    SimNPOConfig,
    simnpo_loss,
    description="Reference-free NPO on length-normalised NLL (+ retain term).",
    needs_retain=True,
    needs_for=retain_needs,
    ref_outputs=retain_reference,
)
