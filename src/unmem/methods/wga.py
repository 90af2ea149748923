"""WGA: weighted gradient ascent (Wang et al. 2025, "Rethinking LLM Unlearning Objectives:
A Gradient Perspective and Go Beyond").

Loss: L = −γ·mean_t[p_t^β · CE_t] + α·R, where CE_t = −log p_θ(y_t | x, y_<t) and the
weight p_t^β = exp(−β·CE_t) is detached (METHODS.md). The mean runs over every answer
token of the batch, as in open-unlearning's WGA; tokens the model has already
forgotten (small p_t) stop pushing, so the ascent saturates instead of diverging.
Defaults as open-unlearning: β = 1, γ = α = 1, retain NLL.
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
from unmem.methods.base import LossInputs, masked_mean
from unmem.methods.registry import register_method


@dataclass
class WGAConfig:
    beta: float = 1.0  # β, sharpness of the token weights p_t^β
    gamma: float = 1.0  # γ, weight of the forget term
    alpha: float = 1.0  # α, weight of the retain term R
    retain_loss: str = "nll"  # R: "nll" or "kl"

    def __post_init__(self) -> None:
        check_number("beta", self.beta)
        check_number("gamma", self.gamma)
        check_number("alpha", self.alpha, strict=False)
        check_choice("retain_loss", self.retain_loss, RETAIN_LOSSES)


def wga_loss(inputs: LossInputs, cfg: WGAConfig) -> tuple[torch.Tensor, dict[str, float]]:
    forget = inputs.forget
    mask = forget.label_mask
    ce_tok = -forget.token_logps()  # (batch, time-1), 0 off the answer
    weight_tok = torch.exp(-cfg.beta * ce_tok).detach()  # p_t^β
    wga = -masked_mean(weight_tok * ce_tok, mask)
    logs = {
        "wga": float(wga.detach()),
        "forget_nll": float(masked_mean(ce_tok, mask).detach()),
        "mean_weight": float(masked_mean(weight_tok, mask)),
    }
    loss = add_retain(cfg.gamma * wga, logs, inputs, cfg.alpha, cfg.retain_loss)
    return loss, logs


register_method(
    "wga",
    WGAConfig,
    wga_loss,
    description="Gradient ascent weighted by the detached token probability p^β (+ retain term).",
    needs_retain=True,
    needs_for=retain_needs,
    ref_outputs=retain_reference,
)
