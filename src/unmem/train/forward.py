"""The forward passes a method asked for, and its loss: one step's work, method-agnostic.

The loop never branches on a method's name: the method's spec says whether it needs
the frozen reference, retain and refusal batches, and which hidden states; this module
runs exactly those passes and hands the tensors to the method's loss function.
"""

from __future__ import annotations

from typing import Any

import torch

from unmem.methods.base import LossInputs, Side
from unmem.methods.registry import MethodSpec
from unmem.train.batches import StepBatch


def side(model: torch.nn.Module, batch: dict[str, Any], layers: list[int]) -> Side:
    """One model's shifted logits, labels and chosen hidden states on one batch."""
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        output_hidden_states=bool(layers),
    )
    weights = batch.get("token_weights")
    return Side(
        logits=out.logits[:, :-1],  # (batch, time-1, vocab)
        labels=batch["labels"][:, 1:],  # (batch, time-1)
        attention_mask=batch["attention_mask"],
        hidden={layer: out.hidden_states[layer] for layer in layers},
        token_weights=None if weights is None else weights[:, 1:],
    )


class MethodForward:
    """Policy (and reference) passes on every role of a step, then the method's loss."""

    def __init__(
        self,
        spec: MethodSpec,
        method_cfg: Any,
        ref: torch.nn.Module | None,
        layers: list[int],
        state: Any,
    ) -> None:
        self.spec, self.method_cfg, self.ref, self.layers, self.state = spec, method_cfg, ref, layers, state

    def _sides(self, model: torch.nn.Module, batch: dict[str, Any] | None) -> tuple[Side | None, Side | None]:
        if batch is None:
            return None, None
        policy = side(model, batch, self.layers)
        if self.ref is None:
            return policy, None
        with torch.no_grad():
            return policy, side(self.ref, batch, self.layers)

    def __call__(self, model: torch.nn.Module, batch: StepBatch) -> tuple[torch.Tensor, dict[str, float]]:
        forget, ref_forget = self._sides(model, batch.get("forget"))
        retain, ref_retain = self._sides(model, batch.get("retain"))
        idk, ref_idk = self._sides(model, batch.get("idk"))
        inputs = LossInputs(forget, ref_forget, retain, ref_retain, idk, ref_idk, self.state)
        return self.spec.loss_fn(inputs, self.method_cfg)


def nll_step(model: torch.nn.Module, batch: StepBatch) -> tuple[torch.Tensor, dict[str, float]]:
    """Fine-tuning's loss: the plain token-mean NLL of the data batch."""
    data = batch["data"]
    loss = model(
        input_ids=data["input_ids"], attention_mask=data["attention_mask"], labels=data["labels"]
    ).loss
    return loss, {}
