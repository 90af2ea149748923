"""NPO: negative preference optimisation (Zhang et al. 2024, "Negative Preference
Optimization", Eq. 3).

Loss: L = −(2/β)·E_f log σ(−β·[log π_θ(y_f|x) − log π_ref(y_f|x)]) + α·R, with summed
answer log-probabilities (METHODS.md). At θ = ref the forget term is (2/β)·ln 2; it
is bounded below by 0, unlike GA. Defaults as open-unlearning's NPO: β = 0.1, γ = α = 1
with retain NLL.
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
class NPOConfig:
    beta: float = 0.1  # β, inverse temperature of the preference loss (paper: 0.1)
    gamma: float = 1.0  # γ, weight of the NPO forget term
    alpha: float = 1.0  # α, weight of the retain term R; 0 gives plain NPO
    retain_loss: str = "nll"  # R: "nll" or "kl"

    def __post_init__(self) -> None:
        check_number("beta", self.beta)
        check_number("gamma", self.gamma)
        check_number("alpha", self.alpha, strict=False)
        check_choice("retain_loss", self.retain_loss, RETAIN_LOSSES)


def npo_loss(inputs: LossInputs, cfg: NPOConfig) -> tuple[torch.Tensor, dict[str, float]]:
    if inputs.ref_forget is None:
        raise ValueError("npo needs the reference model's outputs on the forget batch")
    log_ratio_seq = inputs.forget.seq_logps() - inputs.ref_forget.seq_logps().detach()  # (batch,)
    npo = -(2.0 / cfg.beta) * F.logsigmoid(-cfg.beta * log_ratio_seq).mean()
    logs = {
        "npo": float(npo.detach()),
        "forget_nll": float(inputs.forget.nll().detach()),
        "log_ratio": float(log_ratio_seq.detach().mean()),
    }
    loss = add_retain(cfg.gamma * npo, logs, inputs, cfg.alpha, cfg.retain_loss)
    return loss, logs


register_method(
    "npo",
    NPOConfig,
    npo_loss,
    description="Negative preference optimisation against the frozen reference (+ retain term).",
    needs_ref=True,
    needs_retain=True,
    needs_for=retain_needs,
    ref_outputs=lambda cfg: merge_outputs({"forget": {SEQ_LOGPS}}, retain_reference(cfg)),
)
