"""The forward passes a method asked for, and its loss: one step's work, method-agnostic.

The loop never branches on a method's name: the method's spec says which batches it
needs (retain, refusals), which hidden states, whether it reads logits, and what it reads
from the reference; this module runs exactly those passes and hands the tensors to the
method's loss function. Work is spent only where a loss reads it:

- **one pass for all roles**: the forget, retain and refusal batches are padded to one
  width and concatenated, one larger and more efficient pass with the same gradients
  (right padding: in a causal LM a row's real tokens never see its padding or other rows),
  unless that would add more than ``FUSE_PADDING`` padded tokens;
- **logits only where labels are**: from the batch's first answer position on
  (``logits_to_keep``), none for a method that reads none (RMU); log-probs by the lean
  path of ``unmem.logprobs``;
- **the reference**: built from the outputs cached before training, which the collate
  function put in the batch (``unmem.train.reference``), or with ``reference: live`` a
  no-grad pass of the frozen copy, only on the roles the method reads it on.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from unmem.methods.base import HIDDEN, LossInputs, Side
from unmem.methods.registry import MethodSpec
from unmem.train.batches import StepBatch, label_start

ROLES = ("forget", "retain", "idk")
# Fuse roles into one pass while its padded tokens stay within this factor of the separate passes'.
FUSE_PADDING = 1.25


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the (unwrapped, possibly peft) model's forward can compute logits for chosen positions."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def plan_passes(batches: dict[str, dict[str, Any]], fuse: bool) -> list[list[str]]:
    """Groups of roles that share one forward pass (widths sorted, greedy, padding-bounded)."""
    roles = sorted(batches, key=lambda role: batches[role]["input_ids"].shape[1])
    if not fuse:
        return [[role] for role in roles]
    groups: list[list[str]] = []
    for role in roles:
        if groups and _padding_ok(batches, [*groups[-1], role]):
            groups[-1].append(role)
        else:
            groups.append([role])
    return groups


def _padding_ok(batches: dict[str, dict[str, Any]], roles: list[str]) -> bool:
    shapes = [batches[role]["input_ids"].shape for role in roles]
    width = max(shape[1] for shape in shapes)
    fused = width * sum(shape[0] for shape in shapes)
    return fused <= FUSE_PADDING * sum(rows * columns for rows, columns in shapes)


@dataclass
class PassSpec:
    """What one model pass must return: hidden states of ``layers``; logits from ``start`` on, or none."""

    layers: list[int]
    logits: bool
    window: bool  # the model accepts ``logits_to_keep``


def group_sides(
    model: torch.nn.Module, batches: dict[str, dict[str, Any]], roles: list[str], start: int, spec: PassSpec
) -> dict[str, Side]:
    """One forward pass over the roles' batches concatenated; one Side per role.

    Logits cover shifted label columns ``start`` onward (all columns when the model does
    not accept ``logits_to_keep``; then ``start`` must be 0).
    """
    width = max(batches[role]["input_ids"].shape[1] for role in roles)
    input_ids = torch.cat([_pad(batches[role]["input_ids"], width, 0) for role in roles])
    attention = torch.cat([_pad(batches[role]["attention_mask"], width, 0) for role in roles])
    kwargs: dict[str, Any] = {"output_hidden_states": bool(spec.layers)}
    if spec.window:
        stop = width - 1 if spec.logits else start  # an empty range: no logits at all
        kwargs["logits_to_keep"] = torch.arange(start, stop, device=input_ids.device)
    out = model(input_ids=input_ids, attention_mask=attention, **kwargs)
    logits = None
    if spec.logits:
        logits = out.logits if spec.window else out.logits[:, :-1]  # (rows, width-1-start, vocab)
    sides, first = {}, 0
    for role in roles:
        batch = batches[role]
        rows, length = batch["input_ids"].shape
        part = slice(first, first + rows)
        first += rows
        weights = batch.get("token_weights")
        sides[role] = Side(
            logits=None if logits is None else logits[part, : length - 1 - start],
            labels=batch["labels"][:, 1 + start :],
            attention_mask=batch["attention_mask"],
            hidden={layer: out.hidden_states[layer][part, :length] for layer in spec.layers},
            token_weights=None if weights is None else weights[:, 1 + start :],
            label_offset=start,
        )
    return sides


def _pad(tensor: torch.Tensor, width: int, value: int) -> torch.Tensor:
    return F.pad(tensor, (0, width - tensor.shape[1]), value=value)


def policy_roles(spec: MethodSpec, batch: StepBatch) -> list[str]:
    """The roles of a step the policy runs on: every batch present, except forget when the
    method's loss takes nothing from it (``MethodSpec.forget_pass``)."""
    return [role for role in ROLES if role in batch and (role != "forget" or spec.forget_pass)]


class MethodForward:
    """Policy passes on every role of a step, the reference's outputs, then the method's loss.

    ``ref`` is the live frozen copy (``reference: live``, or a method that declares no
    ``ref_outputs``), or a ``reference.ReferenceCache`` whose outputs the batches carry.
    """

    def __init__(
        self,
        spec: MethodSpec,
        method_cfg: Any,
        ref: Any,
        layers: list[int],
        state: Any,
        *,
        window: bool = False,
        fuse: bool = True,
    ) -> None:
        self.spec, self.method_cfg, self.ref, self.layers, self.state = spec, method_cfg, ref, layers, state
        self.declared = spec.reference_outputs(method_cfg)
        self.needs_ref = spec.needs(method_cfg).ref
        self.window, self.fuse = window, fuse

    def __call__(self, model: torch.nn.Module, batch: StepBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batches = {role: batch[role] for role in policy_roles(self.spec, batch)}
        policy: dict[str, Side] = {}
        reference: dict[str, Side] = {}
        pass_spec = PassSpec(self.layers, self.spec.needs_logits, self.window)
        for roles in plan_passes(batches, self.fuse):
            start = min(label_start(batches[role]) for role in roles) if self.window else 0
            policy |= group_sides(model, batches, roles, start, pass_spec)
            if self.needs_ref:
                reference |= self._reference(batches, roles, start)
        inputs = LossInputs(
            policy.get("forget"),
            reference.get("forget"),
            policy.get("retain"),
            reference.get("retain"),
            policy.get("idk"),
            reference.get("idk"),
            self.state,
        )
        return self.spec.loss_fn(inputs, self.method_cfg)

    def _reference(self, batches: dict[str, dict[str, Any]], roles: list[str], start: int) -> dict[str, Side]:
        """Reference Sides for the roles of one pass that the method reads the reference on."""
        wanted = [role for role in roles if role in self.declared or not self.declared]
        if not wanted:
            return {}
        if not isinstance(self.ref, torch.nn.Module):  # a ReferenceCache
            return {role: self.ref.side(batches[role], start) for role in wanted}
        kinds = {kind for role in wanted for kind in self.declared.get(role, ())}
        reads_all = not self.declared  # an undeclared method gets everything
        spec = PassSpec(
            layers=self.layers if reads_all or HIDDEN in kinds else [],
            logits=reads_all or bool(kinds - {HIDDEN}),
            window=self.window,
        )
        with torch.no_grad():
            return group_sides(self.ref, batches, wanted, start, spec)


def nll_step(model: torch.nn.Module, batch: StepBatch) -> tuple[torch.Tensor, dict[str, float]]:
    """Fine-tuning's loss: the plain token-mean NLL of the data batch."""
    data = batch["data"]
    loss = model(
        input_ids=data["input_ids"], attention_mask=data["attention_mask"], labels=data["labels"]
    ).loss
    return loss, {}
