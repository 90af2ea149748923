"""IdkDPO: DPO with the refusal as the preferred answer and the forget answer as the
rejected one (Rafailov et al. 2023 Eq. 7; used for unlearning in TOFU, Maini et al. 2024).

Loss: L = −(2/β)·E log σ(β·[(log π_θ(y_idk|x) − log π_ref(y_idk|x)) − (log π_θ(y_f|x) − log π_ref(y_f|x))])
+ α·R, with summed answer log-probabilities (METHODS.md). The 2/β scaling follows
open-unlearning (it makes the θ = ref value (2/β)·ln 2, as for NPO). Defaults as
open-unlearning's DPO: β = 0.1, γ = α = 1, retain NLL.

The loop supplies ``idk`` / ``ref_idk``: the same forget questions answered with a refusal.
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
    merge_outputs,
    retain_needs,
    retain_reference,
)
from unmem.methods.base import SEQ_LOGPS, LossInputs
from unmem.methods.registry import register_method


@dataclass
class IdkDPOConfig:
    beta: float = 0.1  # β, inverse temperature
    gamma: float = 1.0  # γ, weight of the DPO term
    alpha: float = 1.0  # α, weight of the retain term R
    retain_loss: str = "nll"  # R: "nll" or "kl"

    def __post_init__(self) -> None:
        check_number("beta", self.beta)
        check_number("gamma", self.gamma)
        check_number("alpha", self.alpha, strict=False)
        check_choice("retain_loss", self.retain_loss, RETAIN_LOSSES)


def idk_dpo_loss(inputs: LossInputs, cfg: IdkDPOConfig) -> tuple[torch.Tensor, dict[str, float]]:
    if inputs.idk is None or inputs.ref_forget is None or inputs.ref_idk is None:
        raise ValueError("idk_dpo needs policy and reference outputs on the forget and refusal batches")
    win_seq = inputs.idk.seq_logps() - inputs.ref_idk.seq_logps().detach()  # (batch,)
    lose_seq = inputs.forget.seq_logps() - inputs.ref_forget.seq_logps().detach()  # (batch,)
    dpo = -(2.0 / cfg.beta) * F.logsigmoid(cfg.beta * (win_seq - lose_seq)).mean()
    logs = {
        "dpo": float(dpo.detach()),
        "forget_nll": float(inputs.forget.nll().detach()),
        "idk_nll": float(inputs.idk.nll().detach()),
        "margin": float((win_seq - lose_seq).detach().mean()),
    }
    loss = add_retain(cfg.gamma * dpo, logs, inputs, cfg.alpha, cfg.retain_loss)
    return loss, logs


register_method(
    "idk_dpo",
    IdkDPOConfig,
    idk_dpo_loss,
    description="DPO preferring an 'I don't know' refusal over the forget answer (+ retain term).",
    needs_ref=True,
    needs_retain=True,
    needs_idk=True,
    needs_for=retain_needs,
    ref_outputs=lambda cfg: merge_outputs({"forget": {SEQ_LOGPS}, "idk": {SEQ_LOGPS}}, retain_reference(cfg)),
)
