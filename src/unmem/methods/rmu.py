"""RMU: representation misdirection for unlearning (Li et al. 2024, "The WMDP Benchmark", §5, Eq. 1-3).

Loss at one hidden layer ℓ:
  L = mean_t ‖h_θ,ℓ(x_f)_t − c·u‖²/d + α · mean_t ‖h_θ,ℓ(x_r)_t − h_ref,ℓ(x_r)_t‖²/d
with u a fixed random unit vector (drawn once in ``setup`` from a seeded generator, as
WMDP does: uniform [0, 1) entries, then normalised) and c the steering coefficient.
Each squared distance is averaged over the d hidden units (torch's MSE), then over tokens.

Layer index ℓ indexes HF's ``output_hidden_states`` tuple: 0 = embeddings, i = output
of decoder layer i; ``layer=-1`` picks the middle, n_layers // 2.

Tokens: ``tokens="answer"`` (default) restricts both terms to answer tokens; ``"all"``
takes every non-padding token, prompt and answer, as WMDP does on its plain-text forget
corpus. On QA data the forget and retain prompts share their template ("Question: …
Answer:"), so with "all" the two terms pull the same prompt tokens opposite ways.

Trained parameters: as WMDP, only the MLPs of the three decoder layers whose outputs
lead up to h_ℓ (``update="wmdp"``: hidden state ℓ is the output of decoder layer ℓ, so
layers ℓ−2..ℓ in WMDP's 1-based count); ``update="all"`` trains whatever the loop
trains. Under LoRA the adapter is trained as the loop sets it up. Defaults: WMDP's
Zephyr-7B setting c = 6.5, α = 1200 (METHODS.md: c ≈ 2-6 at a middle layer; tune c to
the layer's activation norm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from unmem.errors import UnmemError
from unmem.methods._common import (
    check_choice,
    check_int,
    check_number,
    decoder_layers,
    hidden_size,
    num_layers,
)
from unmem.methods.base import HIDDEN, LossInputs, Side, at_least_float32, masked_mean
from unmem.methods.registry import SetupContext, register_method

TOKEN_SCOPES = ("all", "answer")
UPDATES = ("wmdp", "all")
WMDP_LAYERS = 3  # WMDP updates the MLPs of the last three layers up to the steering layer


@dataclass
class RMUConfig:
    layer: int = -1  # ℓ, index into output_hidden_states; -1 = n_layers // 2
    steering_coeff: float = 6.5  # c, norm of the forget target c·u
    alpha: float = 1200.0  # α, weight of the retain activation-matching term
    tokens: str = "answer"  # "answer" tokens only, or "all" non-padding tokens (prompt + answer)
    update: str = "wmdp"  # "wmdp": only the MLPs of the 3 layers up to ℓ; "all": every trainable weight
    seed: int = 0  # seed of the random direction u

    def __post_init__(self) -> None:
        check_int("layer", self.layer, low=-1)
        check_number("steering_coeff", self.steering_coeff)
        check_number("alpha", self.alpha, strict=False)
        check_choice("tokens", self.tokens, TOKEN_SCOPES)
        check_choice("update", self.update, UPDATES)
        check_int("seed", self.seed, low=0)


def rmu_layer(cfg: RMUConfig, n_layers: int) -> int:
    return cfg.layer if cfg.layer >= 0 else n_layers // 2


def random_direction(dim: int, seed: int) -> torch.Tensor:
    """(dim,) unit vector with uniform [0, 1) entries before normalising (WMDP's draw)."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(dim, generator=generator)
    return u / u.norm()


def rmu_restrict_training(model: torch.nn.Module, cfg: RMUConfig) -> None:
    """WMDP's choice: train only the MLPs of the decoder layers ℓ−2..ℓ (1-based: h_ℓ is layer ℓ's output)."""
    if cfg.update == "all":
        return
    layers = decoder_layers(model)
    last = min(rmu_layer(cfg, num_layers(model)), len(layers))
    chosen = layers[max(0, last - WMDP_LAYERS) : last]
    if last < 1 or not all(hasattr(layer, "mlp") for layer in chosen):
        raise UnmemError("rmu update='wmdp' needs layer >= 1 with `mlp` blocks; use update='all'")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for layer in chosen:
        for parameter in layer.mlp.parameters():
            parameter.requires_grad_(True)


def rmu_setup(ctx: SetupContext, cfg: RMUConfig) -> dict[str, Any]:
    """Draw u once; ``state = {"u": (d,) tensor, "layer": ℓ}``."""
    return {
        "u": random_direction(hidden_size(ctx.model), cfg.seed).to(ctx.device),
        "layer": rmu_layer(cfg, num_layers(ctx.model)),
    }


def _token_mask(side: Side, tokens: str) -> torch.Tensor:
    return side.answer_mask_in if tokens == "answer" else side.attention_mask.bool()


def _hidden(side: Side, layer: int, what: str) -> torch.Tensor:
    if layer not in side.hidden:
        raise ValueError(
            f"rmu needs hidden states of layer {layer} on the {what} batch; got {sorted(side.hidden)}"
        )
    return at_least_float32(side.hidden[layer])


def rmu_loss(inputs: LossInputs, cfg: RMUConfig) -> tuple[torch.Tensor, dict[str, float]]:
    state = inputs.state
    if not isinstance(state, dict) or "u" not in state:
        raise ValueError("rmu needs its setup state (the random direction u); was setup run?")
    layer = state.get("layer", cfg.layer)
    if layer < 0 and len(inputs.forget.hidden) == 1:  # setup did not say; the loop computed just one
        layer = next(iter(inputs.forget.hidden))
    h_forget = _hidden(inputs.forget, layer, "forget")  # (batch, time, d)
    target = cfg.steering_coeff * state["u"].to(h_forget.device, h_forget.dtype)  # (d,)
    forget_mse_tok = (h_forget - target).pow(2).mean(-1)  # (batch, time)
    forget_mse = masked_mean(forget_mse_tok, _token_mask(inputs.forget, cfg.tokens))
    loss = forget_mse
    logs = {"forget_mse": float(forget_mse.detach())}
    if cfg.alpha > 0:
        if inputs.retain is None or inputs.ref_retain is None:
            raise ValueError("rmu needs policy and reference hidden states on the retain batch")
        h_retain = _hidden(inputs.retain, layer, "retain")
        h_ref = _hidden(inputs.ref_retain, layer, "reference retain").detach()
        retain_mse_tok = (h_retain - h_ref).pow(2).mean(-1)  # (batch, time)
        retain_mse = masked_mean(retain_mse_tok, _token_mask(inputs.retain, cfg.tokens))
        loss = loss + cfg.alpha * retain_mse
        logs["retain_mse"] = float(retain_mse.detach())
    return loss, logs


register_method(
    "rmu",
    RMUConfig,
    rmu_loss,
    description="Steer middle-layer activations on forget to a random direction; keep retain activations.",
    needs_ref=True,
    needs_retain=True,
    needs_for=lambda cfg: {"retain": cfg.alpha > 0},
    ref_outputs=lambda cfg: {"retain": {HIDDEN}} if cfg.alpha > 0 else {},
    needs_logits=False,
    hidden_layers=lambda cfg, n: [rmu_layer(cfg, n)],
    setup=rmu_setup,
    restrict_training=rmu_restrict_training,
)
