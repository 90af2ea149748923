"""Chen et al. 2024: evaluator-selected unlearning with a bounded negative distance and a
positive pull toward a cluster of desirable responses. METHODS.md, seed method 3.

*** RECONSTRUCTED. *** Only the paper's abstract is available; every formula and default
below is our design from that abstract (METHODS.md), not the authors' method:

1. Evaluator (``select_for_unlearning``, in ``_chen_evaluator.py``): scores candidate
   records by PII patterns, forget-topic embedding similarity or a user classifier and
   keeps those above a threshold. It runs before training, on the data; not in the loss.
2. Negative loss, bounded: L_neg = −min(d, m), d = KL(π_ref ‖ π_θ) per forget answer
   token, averaged; m = ``margin``. Past the margin it has no gradient, so it cannot diverge.
   ``focus`` (ours, as DI's) weights the tokens of the record's ``sensitive`` spans in the
   average (``base.focus_weights``); "none" averages every answer token equally.
3. Positive loss: L_pos = ‖h̄_θ(x_f, y_f) − μ‖²/D + NLL(y_idk | x_f). h̄ is the last
   hidden state mean-pooled over the forget answer tokens (D = hidden size, so the
   squared distance is a per-unit mean). Departures: the abstract's response y_θ is the
   teacher-forced forget answer y_f (no generation in the loop), and the NLL is on the
   refusal the loop pairs with the question (the ``idk`` Side), not the one closest to μ.
   μ is computed once in ``setup``: the reference model's mean-pooled last hidden state
   over refusal answers (``unmem/data/idk_answers.txt``) placed after forget questions;
   with ``clusters`` = k > 1 they are clustered by k-means and μ is the centroid of the
   most populated cluster (the typical refusal); k = 1 is the plain mean.
   ``refusal`` (ours): "whole" refusals as above, or "span": the forget answer with its
   sensitive spans replaced by a refusal phrase (``unmem.data.refusals.refusal_record``), for
   the NLL and for μ alike. A whole refusal teaches every question its first words ("I'm",
   "I don't"); on SmolLM2 the model then began world-facts answers with "I" ("Ireland.").
4. Retain: α·KL(π_ref ‖ π_θ) on retain answer tokens.
  L = λ_pos·L_pos + λ_neg·L_neg + α·R
Hidden index: HF ``output_hidden_states`` numbering, the last entry (= number of layers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from unmem.data.refusals import REFUSAL_STYLES, load_idk_answers, refusal_record
from unmem.errors import UnmemError
from unmem.methods._chen_evaluator import score_records, select_for_unlearning
from unmem.methods._common import (
    add_retain,
    check_choice,
    check_focus,
    check_int,
    check_number,
    num_layers,
    record_batches,
)
from unmem.methods.base import (
    IGNORE_INDEX,
    LOGITS,
    LossInputs,
    at_least_float32,
    focus_weights,
    kl_on_answers,
)
from unmem.methods.registry import SetupContext, register_method

__all__ = ["ChenConfig", "chen_loss", "cluster_mean", "score_records", "select_for_unlearning"]


@dataclass
class ChenConfig:
    lambda_pos: float = 1.0  # λ_pos, weight of the positive (pull toward μ + refusal NLL) loss
    lambda_neg: float = 1.0  # λ_neg, weight of the bounded negative distance
    alpha: float = 1.0  # α, weight of KL(π_ref ‖ π_θ) on retain
    margin: float = 1.0  # m, nats per token beyond which pushing away stops
    clusters: int = 1  # k of k-means over refusal embeddings; 1 = plain mean
    setup_pairs: int = 256  # at most this many (forget question, refusal) pairs to embed for μ
    seed: int = 0  # k-means seed
    focus: str = "none"  # "none" | "soft" | "hard": weight of sensitive spans in the push (ours)
    focus_coeff: float = 10.0  # weight of sensitive tokens in the "soft" variant
    refusal: str = "whole"  # desirable response: "whole" refusal or "span" (ours; see docstring)

    def __post_init__(self) -> None:
        check_number("lambda_pos", self.lambda_pos, strict=False)
        check_number("lambda_neg", self.lambda_neg, strict=False)
        check_number("alpha", self.alpha, strict=False)
        check_number("margin", self.margin)
        check_int("clusters", self.clusters, low=1)
        check_int("setup_pairs", self.setup_pairs, low=1)
        check_int("seed", self.seed, low=0)
        check_focus(self.focus, self.focus_coeff)
        check_choice("refusal", self.refusal, REFUSAL_STYLES)


def cluster_mean(embeddings: torch.Tensor, k: int = 1, *, seed: int = 0) -> torch.Tensor:
    """(D,) μ: the mean of (n, D) embeddings, or with k > 1 the centroid of the largest k-means cluster."""
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError(f"need a non-empty (n, D) embedding matrix, got shape {tuple(embeddings.shape)}")
    if k == 1:
        return embeddings.float().mean(0)
    if k > len(embeddings):
        raise ValueError(f"clusters={k} exceeds the {len(embeddings)} refusal embeddings")
    from sklearn.cluster import KMeans

    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(embeddings.float().cpu().numpy()).labels_
    labels_t = torch.as_tensor(labels)
    largest = int(torch.bincount(labels_t, minlength=k).argmax())  # ties: the lowest cluster id
    return embeddings.float()[labels_t == largest].mean(0)


@torch.no_grad()
def answer_embeddings(model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> torch.Tensor:
    """(n, D) last hidden state mean-pooled over each sequence's answer tokens (labels != -100)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pooled = []
    try:
        for batch in batches:
            out = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                output_hidden_states=True,
            )
            hidden = at_least_float32(out.hidden_states[-1])  # (batch, time, D)
            mask = (batch["labels"].to(device) != IGNORE_INDEX).unsqueeze(-1).to(hidden.dtype)
            pooled.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu())
    finally:
        model.train(was_training)
    return torch.cat(pooled)


def chen_setup(ctx: SetupContext, cfg: ChenConfig) -> dict[str, Any]:
    """``state = {"mu": (D,) tensor, "layer": last hidden index}``, from the reference model.

    μ pools the reference's last hidden state over the forget records answered with refusals
    (cycling records and refusals up to ``setup_pairs`` pairs), as the refusal batch pairs them."""
    records = [r for r in ctx.forget_records if r.get("question") or r.get("prompt")]
    if not records:
        raise UnmemError("chen needs question/answer forget records or text windows to compute μ")
    kind = "text" if "question" not in records[0] else ("span" if cfg.refusal == "span" else "qa")
    n = min(cfg.setup_pairs, max(len(records), len(load_idk_answers(kind))))
    items: list[Any] = []
    for i in range(n):
        paired = refusal_record(
            records[i % len(records)], lambda options, i=i: options[i % len(options)], cfg.refusal
        )
        items.append((paired["question"], paired["answer"]) if "question" in paired else paired)
    model = ctx.ref_model if ctx.ref_model is not None else ctx.model
    embeddings = answer_embeddings(model, record_batches(ctx.tokenizer, items))
    mu = cluster_mean(embeddings, cfg.clusters, seed=cfg.seed)
    return {"mu": mu.to(ctx.device), "layer": num_layers(ctx.model)}


def chen_loss(inputs: LossInputs, cfg: ChenConfig) -> tuple[torch.Tensor, dict[str, float]]:
    forget, ref_forget, idk = inputs.forget, inputs.ref_forget, inputs.idk
    if ref_forget is None or idk is None:
        raise ValueError("chen needs reference outputs on the forget batch and the refusal (idk) batch")
    state = inputs.state
    if not isinstance(state, dict) or "mu" not in state:
        raise ValueError("chen needs its setup state (the refusal centre μ); was setup run?")
    layer = state.get("layer", -1)
    if layer not in forget.hidden:
        if len(forget.hidden) != 1:
            raise ValueError(
                f"chen needs the last hidden state (layer {layer}); got layers {sorted(forget.hidden)}"
            )
        layer = next(iter(forget.hidden))

    # Negative: push away from the reference on the forget answers, up to the margin.
    distance = kl_on_answers(ref_forget, forget, focus_weights(forget, cfg.focus, cfg.focus_coeff))
    neg = -distance.clamp(max=cfg.margin)

    # Positive: pull the pooled forget-answer representation toward μ; learn the refusal.
    hidden = at_least_float32(forget.hidden[layer])  # (batch, time, D)
    mask = forget.answer_mask_in  # (batch, time)
    mask_f = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask_f).sum(1) / mask_f.sum(1).clamp(min=1)  # (batch, D)
    mu = state["mu"].to(pooled.device, pooled.dtype)
    pull_seq = (pooled - mu).pow(2).mean(-1)  # (batch,)
    has_answer = mask.any(1)
    pull = pull_seq[has_answer].mean() if bool(has_answer.any()) else pull_seq.sum() * 0
    idk_nll = idk.nll()
    pos = pull + idk_nll

    loss = cfg.lambda_pos * pos + cfg.lambda_neg * neg
    logs = {
        "forget_kl": float(distance.detach()),
        "pull_mse": float(pull.detach()),
        "idk_nll": float(idk_nll.detach()),
        "forget_nll": float(forget.nll().detach()),
    }
    loss = add_retain(loss, logs, inputs, cfg.alpha, "kl")
    return loss, logs


register_method(
    "chen",
    ChenConfig,
    chen_loss,
    description="Chen et al. (reconstructed): bounded push from the reference + pull toward refusal embeddings.",
    needs_ref=True,
    needs_retain=True,
    needs_idk=True,
    needs_for=lambda cfg: {"retain": cfg.alpha > 0},
    ref_outputs=lambda cfg: {"forget": {LOGITS}} | ({"retain": {LOGITS}} if cfg.alpha > 0 else {}),
    hidden_layers=lambda cfg, n: [n],
    setup=chen_setup,
)
