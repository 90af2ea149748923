"""EUL: efficient unlearning with unlearning layers, and their fusion (Chen & Yang 2023,
"Unlearn What You Want to Forget: Efficient Unlearning for LLMs", EMNLP). METHODS.md,
seed method 2; the training objective is marked *(reconstructed)* there.

Model surgery (``prepare_model``): every base parameter is frozen and an unlearning
layer, a bottleneck adapter h ↦ h + up(act(down(h))), is added after the feed-forward
block of every decoder layer. Both maps start small and random (``init_std``), so the
model starts close to, not exactly at, the base (see ``UnlearningLayer``).
The adapter is attached to the existing MLP module (child ``unlearning_layer`` plus a
forward hook) rather than by wrapping it, so base parameter names stay unchanged and
every adapter parameter name contains ``unlearning_layer``.

Objective, with means over answer tokens where the paper writes sums:
  L = α·KL(π_ref ‖ π_θ)(x_r) − min(KL(π_ref ‖ π_θ)(x_f), kl_bound)
      + λ·NLL(y_r | x_r) − γ·min(NLL(y_f | x_f), nll_bound)
α = 0.8, λ = 1.0, γ = 0.2 (paper). The paper's L_LM is a masked-LM loss on forget
entities (T5); for causal LMs it is the forget answer NLL. Both negative terms are
clamped (zero gradient past the bound) so neither can diverge; the bounds are ours.
``focus`` (ours, as DI's) weights the answer tokens of both forget terms by the record's
``sensitive`` spans (``base.focus_weights``); "none" is the paper's objective.
Training alternates phases (``schedule="alternate"``): the loop passes only retain Sides
in retain phases and only forget Sides in forget phases; the loss uses what is there.
Each retain phase is capped at ``retain_share`` × the forget phase's batches (ours: the
paper alternates whole epochs, which with a 10% forget set lets 9x more retain steps
undo each forget phase).

Fusion of k deletion requests (paper §3.3, RegMean-style): for every linear map of the
adapters, W_merged = (Σ_i G_i + εI)^-1 Σ_i G_i W_i, where G_i = X_iᵀX_i is the Gram
matrix of the inputs entering that map on request i's forget data. Inputs are augmented
to [x, 1] so the bias is merged by the same closed form: it is the exact least-squares
fit of Σ_i ‖[X_i 1] A − [X_i 1] A_i‖² with A = [Wᵀ; b]. ``finalize`` stores each request's
Gram matrices next to its adapter (never the data).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unmem.errors import UnmemError
from unmem.methods._common import (
    check_choice,
    check_focus,
    check_int,
    check_number,
    decoder_layers,
    hidden_size,
    record_batches,
)
from unmem.methods.base import LOGITS, LossInputs, focus_weights, kl_on_answers, masked_mean
from unmem.methods.registry import SetupContext, register_method

ADAPTER_NAME = "unlearning_layer"  # every adapter parameter name contains this
GRAMS_FILE = "unlearning_layer_grams.safetensors"
ACTIVATIONS = ("relu", "gelu")


@dataclass
class EULConfig:
    alpha: float = 0.8  # α, weight of KL(π_ref ‖ π_θ) on retain
    lam: float = 1.0  # λ, weight of the retain task loss (NLL)
    gamma: float = 0.2  # γ, weight of the negated forget LM loss
    kl_bound: float = 5.0  # forget KL is clamped at this many nats/token (ours)
    nll_bound: float = 10.0  # forget NLL is clamped at this many nats/token (ours)
    reduction_factor: int = 16  # adapter bottleneck r = hidden_size // reduction_factor
    activation: str = "relu"  # adapter nonlinearity: "relu" or "gelu"
    init_std: float = 1e-2  # std of both adapter maps' initial weights (0: start exactly as the base)
    # Retain batches per forget batch in the alternating schedule. The paper alternates whole
    # epochs, but a forget set of 10% makes retain epochs ~9x longer, and their steps undo
    # the forget epoch's; 1.0 gives both phases the same number of steps.
    retain_share: float = 1.0
    focus: str = "none"  # "none" | "soft" | "hard": weight of sensitive spans in both forget terms (ours)
    focus_coeff: float = 10.0  # weight of sensitive tokens in the "soft" variant

    def __post_init__(self) -> None:
        check_number("alpha", self.alpha, strict=False)
        check_number("lam", self.lam, strict=False)
        check_number("gamma", self.gamma, strict=False)
        check_number("kl_bound", self.kl_bound)
        check_number("nll_bound", self.nll_bound)
        check_int("reduction_factor", self.reduction_factor, low=1)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_number("init_std", self.init_std, strict=False)
        check_number("retain_share", self.retain_share)
        check_focus(self.focus, self.focus_coeff)


class UnlearningLayer(nn.Module):
    """Bottleneck adapter h ↦ up(act(down(h))) (the residual is added by the hook); float32."""

    def __init__(self, dim: int, bottleneck: int, activation: str = "relu", init_std: float = 1e-2) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.ReLU() if activation == "relu" else nn.GELU()
        self.up = nn.Linear(bottleneck, dim)
        # Small random weights in both maps, zero biases (as adapter libraries start). A zero
        # ``up`` would make the model start exactly as the base, where the "maximise KL on
        # forget" term has zero gradient, and only the NLL terms could move the adapter.
        for linear in (self.down, self.up):
            nn.init.normal_(linear.weight, std=init_std)
            nn.init.zeros_(linear.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.up(self.act(self.down(h.to(self.down.weight.dtype))))
        return out.to(h.dtype)


def _add_unlearning_layer(module: nn.Module, args: Any, output: Any) -> Any:
    """Forward hook on an MLP: mlp(x) + adapter(mlp(x)). Module-level so deepcopy/pickle work."""
    adapter = getattr(module, ADAPTER_NAME)
    if isinstance(output, tuple):  # e.g. MoE blocks return (hidden, router_logits)
        return (output[0] + adapter(output[0]), *output[1:])
    return output + adapter(output)


def eul_prepare_model(model: nn.Module, cfg: EULConfig) -> nn.Module:
    """Freeze the base model and add an unlearning layer after every decoder layer's MLP."""
    layers = decoder_layers(model)
    dim = hidden_size(model)
    bottleneck = max(1, dim // cfg.reduction_factor)
    for param in model.parameters():
        param.requires_grad_(False)
    for index, layer in enumerate(layers):
        mlp = getattr(layer, "mlp", None)
        if not isinstance(mlp, nn.Module):
            raise UnmemError(
                f"EUL: decoder layer {index} of {type(model).__name__} has no `mlp` feed-forward block"
            )
        if hasattr(mlp, ADAPTER_NAME):
            raise UnmemError(f"EUL: layer {index} already has an unlearning layer (prepare_model ran twice?)")
        device = next(mlp.parameters()).device
        mlp.add_module(
            ADAPTER_NAME, UnlearningLayer(dim, bottleneck, cfg.activation, cfg.init_std).to(device)
        )
        mlp.register_forward_hook(_add_unlearning_layer)
    return model


def unlearning_layer_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter parameters only (what a deletion request stores), detached on CPU."""
    return {
        name: tensor.detach().cpu() for name, tensor in model.state_dict().items() if ADAPTER_NAME in name
    }


def eul_loss(inputs: LossInputs, cfg: EULConfig) -> tuple[torch.Tensor, dict[str, float]]:
    if inputs.forget is None and inputs.retain is None:
        raise ValueError("eul got neither a forget nor a retain batch")
    terms: list[torch.Tensor] = []
    logs: dict[str, float] = {}
    if inputs.retain is not None:
        if inputs.ref_retain is None:
            raise ValueError("eul needs the reference model's outputs on the retain batch")
        retain_kl = kl_on_answers(inputs.ref_retain, inputs.retain)
        retain_nll = inputs.retain.nll()
        terms.append(cfg.alpha * retain_kl + cfg.lam * retain_nll)
        logs.update(retain_kl=float(retain_kl.detach()), retain_nll=float(retain_nll.detach()))
    if inputs.forget is not None:
        if inputs.ref_forget is None:
            raise ValueError("eul needs the reference model's outputs on the forget batch")
        weights = focus_weights(inputs.forget, cfg.focus, cfg.focus_coeff)
        forget_kl = kl_on_answers(inputs.ref_forget, inputs.forget, weights)
        forget_nll = masked_mean(-inputs.forget.token_logps(), weights)
        terms.append(-forget_kl.clamp(max=cfg.kl_bound) - cfg.gamma * forget_nll.clamp(max=cfg.nll_bound))
        logs.update(forget_kl=float(forget_kl.detach()), forget_nll=float(forget_nll.detach()))
    return torch.stack(terms).sum(), logs


# ----------------------------------------------------------------------------- fusion


def _adapter_linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {
        name: module
        for name, module in model.named_modules()
        if ADAPTER_NAME in name and isinstance(module, nn.Linear)
    }


@torch.no_grad()
def collect_grams(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Gram matrices of the inputs of every adapter linear map: {module name: (in+1, in+1)}.

    Each input row is augmented to [x, 1] (see the module docstring), so G = Σ [x,1]ᵀ[x,1]
    is symmetric PSD and G[-1, -1] counts the tokens. Each batch is a dict with
    ``input_ids`` and optionally ``attention_mask``; with a mask, padding tokens are left
    out, and a ``gram_mask`` (batch, time) counts only the tokens it marks. Accumulated in
    float64, returned as float32 on CPU. The model runs in eval mode.
    """
    linears = _adapter_linears(model)
    if not linears:
        raise UnmemError("collect_grams: the model has no unlearning layers (run EUL's prepare_model first)")
    grams: dict[str, torch.Tensor] = {}
    current: dict[str, torch.Tensor | None] = {"mask": None}

    def make_hook(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            x = args[0].detach()
            mask = current["mask"]
            if mask is not None and x.shape[:-1] == mask.shape:
                x = x[mask]  # (tokens, in)
            x = x.reshape(-1, x.shape[-1]).double()
            x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # (tokens, in+1)
            gram = x.T @ x
            grams[name] = grams[name] + gram if name in grams else gram

        return hook

    handles = [module.register_forward_hook(make_hook(name)) for name, module in linears.items()]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for batch in batches:
            input_ids = batch["input_ids"].to(device)
            mask = batch.get("attention_mask")
            mask = None if mask is None else mask.to(device)
            select = batch.get("gram_mask", mask)  # the tokens whose inputs count (default: all real ones)
            current["mask"] = None if select is None else select.to(device).bool()
            model(input_ids=input_ids, attention_mask=mask)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: gram.float().cpu() for name, gram in grams.items()}


def fuse_unlearning_layers(
    weights: list[dict[str, torch.Tensor]], grams: list[dict[str, torch.Tensor]], eps: float = 1e-4
) -> dict[str, torch.Tensor]:
    """Merge k requests' adapters: per linear map, A = (Σ G_i + εI)^-1 Σ G_i A_i.

    ``weights[i]`` maps ``"<module>.weight"`` (out, in) and optionally ``"<module>.bias"``
    (out,) to request i's tensors; ``grams[i]`` maps ``"<module>"`` to its Gram matrix,
    (in+1, in+1) for [x, 1]-augmented inputs (as ``collect_grams`` gives) or (in, in).
    torch stores W as (out, in) with y = x Wᵀ + b, so the solve is on A_i = [W_iᵀ; b_i].
    With plain (in, in) Grams a bias cannot be fused and is averaged. Parameters that have
    no Gram matrix are averaged. Solved in float64; results take the inputs' dtype.
    """
    if not weights or len(weights) != len(grams):
        raise ValueError(
            f"need one Gram dict per weight dict, got {len(weights)} weights and {len(grams)} grams"
        )
    check_number("eps", eps, strict=False)
    merged: dict[str, torch.Tensor] = {}
    for name in grams[0]:
        w_key, b_key = f"{name}.weight", f"{name}.bias"
        for i, (w, g) in enumerate(zip(weights, grams, strict=True)):
            if w_key not in w or name not in g:
                raise ValueError(f"request {i} lacks {w_key!r} or its Gram matrix {name!r}")
        w_list = [w[w_key].double() for w in weights]  # (out, in) each
        n_in = w_list[0].shape[1]
        size = grams[0][name].shape[0]
        if size not in (n_in, n_in + 1):
            raise ValueError(f"Gram matrix of {name!r} is {size}x{size}; expected {n_in + 1} or {n_in}")
        has_bias = b_key in weights[0]
        fuse_bias = has_bias and size == n_in + 1
        if fuse_bias:  # A_i = [W_iᵀ; b_i], (in+1, out)
            a_list = [
                torch.cat([w.T, wd[b_key].double()[None]]) for w, wd in zip(w_list, weights, strict=True)
            ]
            g_list = [g[name].double() for g in grams]
        else:  # no bias to fuse: the x-block of the Gram matrix
            a_list = [w.T for w in w_list]
            g_list = [g[name].double()[:n_in, :n_in] for g in grams]
        g_sum = torch.stack(g_list).sum(0)
        rhs = torch.stack([g @ a for g, a in zip(g_list, a_list, strict=True)]).sum(0)  # (in[+1], out)
        eye = torch.eye(g_sum.shape[0], dtype=g_sum.dtype, device=g_sum.device)
        solution = torch.linalg.solve(g_sum + eps * eye, rhs)
        merged[w_key] = solution[:n_in].T.contiguous().to(weights[0][w_key].dtype)
        if fuse_bias:
            merged[b_key] = solution[n_in].to(weights[0][b_key].dtype)
    for key in weights[0]:
        if key not in merged:
            merged[key] = torch.stack([w[key].double() for w in weights]).mean(0).to(weights[0][key].dtype)
    return merged


def eul_finalize(model: nn.Module, ctx: SetupContext, cfg: EULConfig, out_dir: Path) -> Path:
    """Store this request's Gram matrices for later fusion.

    Inputs: the forget records as the collator formats them (prompt + answer for QA
    records, the passage for ``text`` records, prompt + continuation for text windows),
    padding excluded.
    """
    from safetensors.torch import save_file

    def item(record: dict[str, Any]) -> tuple[str, str] | str | dict[str, Any]:
        if "question" in record:
            return str(record["question"]), str(record["answer"])
        return str(record["text"]) if "text" in record else record

    items = [item(r) for r in ctx.forget_records]
    grams = collect_grams(model, record_batches(ctx.tokenizer, items))
    path = Path(out_dir) / GRAMS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: gram.contiguous() for name, gram in grams.items()}, str(path))
    return path


register_method(
    "eul",
    EULConfig,
    eul_loss,
    description="EUL: train small unlearning layers on a frozen model (teacher-student); fusable per request.",
    needs_ref=True,
    needs_retain=True,
    ref_outputs=lambda cfg: {"forget": {LOGITS}, "retain": {LOGITS}},
    prepare_model=eul_prepare_model,
    schedule="alternate",
    retain_phase_batches=lambda cfg, forget_batches: max(1, math.ceil(cfg.retain_share * forget_batches)),
    finalize=eul_finalize,
)
