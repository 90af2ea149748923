"""FLAT: loss adjustment with only forget data (Wang et al. 2025, "LLM Unlearning via Loss
Adjustment with Only Forget Data", ICLR). METHODS.md, seed method 4.

No retain data and no reference model. Each forget question x has its answer y_f and a
template refusal y_e (the ``idk`` Side). With P(y|x) the mean token *probability* of
the answer (not the log-probability), FLAT maximises the variational lower bound of an
f-divergence between the two answers, i.e. minimises, averaged over the batch,
  L = −g(P_e) + f*(g(P_f)).
Pairs (g, f*∘g) for the six divergences:
  kl          v                       e^{v−1}
  pearson     v                       v²/4 + v
  js          log2 − log(1+e^{−v})    v + log(1+e^{−v}) − log2
  tv          ½·tanh(v)               ½·tanh(v)
  reverse_kl  −e^{−v}                 v − 1
  hellinger   1 − e^{−v}              e^{v} − 1
Departure for reverse_kl and hellinger: METHODS.md's table (like the official code,
UCSC-REAL/FLAT ``get_contrastive_loss``) writes g(v) = −e^{v} and 1 − e^{v}, which makes
∂L/∂P_e > 0 and ∂L/∂P_f < 0: minimising it *raises* the forget answer's probability and
lowers the refusal's. We use the f-GAN activations (Nowozin et al. 2016, Table 2), e^{−v}
in place of e^{v}, which restores the intended direction; ``literal_table=True`` gives the
table's formulas. The other four rows are exactly the table's.
Default divergence: total variation, the official code's default (``variants``).
``focus`` (ours, as DI's) weights the tokens of the record's ``sensitive`` spans in the
forget answer's P(y_f|x) (``base.focus_weights``); "none" is the paper's plain mean.
``refusal`` picks the template answer y_e (``unmem.data.refusals.refusal_record``): "whole", a
shipped refusal (the paper's "I don't know"-style template); "span" (ours), the forget answer with
its sensitive spans replaced by a refusal phrase. Why: every whole refusal starts with the same
few words ("I'm", "I don't"), and raising P(y_e) teaches the first answer token of *every*
question to be one of them: on SmolLM2 the model then answered world-facts questions with
"I'm a friendly AI." (docs/real-models.md). A span refusal starts as the answer does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from unmem.data.refusals import REFUSAL_STYLES
from unmem.methods._common import check_choice, check_focus
from unmem.methods.base import LossInputs, Side, focus_weights
from unmem.methods.registry import register_method

DIVERGENCES = ("kl", "reverse_kl", "pearson", "hellinger", "js", "tv")
Pair = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]
LOG2 = math.log(2.0)


def divergence_terms(divergence: str, *, literal_table: bool = False) -> Pair:
    """(g, f*∘g), both as functions of v, for a divergence name; see the module docstring."""
    if divergence == "kl":
        return (lambda v: v), (lambda v: torch.exp(v - 1.0))
    if divergence == "pearson":
        return (lambda v: v), (lambda v: v * v / 4.0 + v)
    if divergence == "js":
        return (
            lambda v: LOG2 - torch.nn.functional.softplus(-v),
            lambda v: v + torch.nn.functional.softplus(-v) - LOG2,
        )
    if divergence == "tv":
        return (lambda v: 0.5 * torch.tanh(v)), (lambda v: 0.5 * torch.tanh(v))
    if divergence == "reverse_kl":
        if literal_table:
            return (lambda v: -torch.exp(v)), (lambda v: -1.0 - v)
        return (lambda v: -torch.exp(-v)), (lambda v: v - 1.0)
    if divergence == "hellinger":
        if literal_table:
            return (lambda v: 1.0 - torch.exp(v)), (lambda v: (1.0 - torch.exp(v)) / torch.exp(v))
        return (lambda v: 1.0 - torch.exp(-v)), (lambda v: torch.exp(v) - 1.0)
    raise ValueError(f"unknown divergence {divergence!r}; known: {', '.join(DIVERGENCES)}")


@dataclass
class FLATConfig:
    divergence: str = "tv"  # one of kl, reverse_kl, pearson, hellinger, js, tv
    literal_table: bool = False  # reverse_kl/hellinger: METHODS.md's formulas (see docstring)
    focus: str = "none"  # "none" | "soft" | "hard": weight of sensitive spans in P(y_f|x) (ours)
    focus_coeff: float = 10.0  # weight of sensitive tokens in the "soft" variant
    refusal: str = "whole"  # template y_e: "whole" (a shipped refusal) or "span" (ours; see docstring)

    def __post_init__(self) -> None:
        divergence_terms(self.divergence)  # raises on an unknown name, listing the six
        if not isinstance(self.literal_table, bool):
            raise ValueError(f"literal_table must be true or false, got {self.literal_table!r}")
        check_focus(self.focus, self.focus_coeff)
        check_choice("refusal", self.refusal, REFUSAL_STYLES)


def mean_token_prob(side: Side, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(batch,) P(y|x): mean over answer tokens (or ``weights``) of p(y_t | x, y_<t); 0 if empty."""
    weights = side.label_mask.float() if weights is None else weights
    probs = torch.exp(side.token_logps()) * weights
    return probs.sum(-1) / weights.sum(-1).clamp(min=1e-8)


def flat_loss(inputs: LossInputs, cfg: FLATConfig) -> tuple[torch.Tensor, dict[str, float]]:
    if inputs.idk is None:
        raise ValueError("flat needs the policy's outputs on the template-refusal batch (needs_idk)")
    g, conjugate_of_g = divergence_terms(cfg.divergence, literal_table=cfg.literal_table)
    p_forget = mean_token_prob(inputs.forget, focus_weights(inputs.forget, cfg.focus, cfg.focus_coeff))
    p_template = mean_token_prob(inputs.idk)  # (batch,)
    loss = (-g(p_template) + conjugate_of_g(p_forget)).mean()
    logs = {
        "forget_prob": float(p_forget.detach().mean()),
        "template_prob": float(p_template.detach().mean()),
        "forget_nll": float(inputs.forget.nll().detach()),
    }
    return loss, logs


register_method(
    "flat",
    FLATConfig,
    flat_loss,
    description="FLAT: maximise an f-divergence between a refusal and the forget answer; forget data only.",
    needs_idk=True,
)
