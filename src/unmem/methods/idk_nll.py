"""IdkNLL: fine-tune the forget questions onto refusals (TOFU's "IDK" baseline,
Maini et al. 2024).

Loss: L = γ·NLL(y_idk | x_f) + α·R (METHODS.md); the loop supplies the ``idk`` Side, the
forget questions answered with a refusal from ``unmem/data/idk_answers.txt``. The forget
answers themselves are not run through the model (``forget_pass=False``): the loss does
not read them, so ``forget_nll`` is logged only when a caller supplies them.
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
class IdkNLLConfig:
    gamma: float = 1.0  # γ, weight of the refusal NLL
    alpha: float = 1.0  # α, weight of the retain term R
    retain_loss: str = "nll"  # R: "nll" or "kl"

    def __post_init__(self) -> None:
        check_number("gamma", self.gamma)
        check_number("alpha", self.alpha, strict=False)
        check_choice("retain_loss", self.retain_loss, RETAIN_LOSSES)


def idk_nll_loss(inputs: LossInputs, cfg: IdkNLLConfig) -> tuple[torch.Tensor, dict[str, float]]:
    if inputs.idk is None:
        raise ValueError("idk_nll needs the policy's outputs on the refusal batch (needs_idk)")
    idk_nll = inputs.idk.nll()
    logs = {"idk_nll": float(idk_nll.detach())}
    if inputs.forget is not None:
        logs["forget_nll"] = float(inputs.forget.nll().detach())
    loss = add_retain(cfg.gamma * idk_nll, logs, inputs, cfg.alpha, cfg.retain_loss)
    return loss, logs


register_method(
    "idk_nll",
    IdkNLLConfig,
    idk_nll_loss,
    description="Fine-tune forget questions onto 'I don't know' refusals (+ retain term).",
    needs_retain=True,
    needs_idk=True,
    forget_pass=False,
    needs_for=retain_needs,
    ref_outputs=retain_reference,
)
