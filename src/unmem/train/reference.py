"""The frozen reference's outputs, computed once per example before training and cached on disk.

A method declares what its loss reads from the reference (``MethodSpec.ref_outputs``):
summed answer log-probabilities (NPO, IdkDPO), the next-token distribution at answer
positions (KL terms, DI, EUL, Chen) or hidden states (RMU). These depend only on the
starting weights and the data, never on training, so with ``reference: cached`` (the
default) they are computed here, once, on the model as loaded, before LoRA or a method's
layers are added and before the first step. No copy of the model is made, so none sits
in memory during training (under ZeRO-3 / FSDP: no unsharded copy per process either).
Each batch then carries its rows' outputs (``ReferenceCache.attach``, in the collate
function), laid out like the batch, and the loop builds the reference's ``Side`` from them.

What is stored per example:
- ``seq_logps``: one float;
- ``logits``: per answer token, the input of the model's output head (hidden size floats,
  not vocabulary size); a frozen copy of the head alone turns them back into the
  reference's logits, exactly, during training (a few MB to a GB of weights instead of a
  whole model; checked against the model's own logits when the cache is computed);
- ``hidden``: every token's hidden state at the method's layers (float32, or the model's wider dtype).

On disk: one safetensors file per (role, kind) in the cache directory, named by a hash of
the model's files, the examples' token ids and the settings that shape the output (k,
layers). A sweep over learning rates or seeds therefore computes it once. Files are written
atomically: concurrent runs (or data-parallel processes) at worst compute one twice.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unmem.data.collate import Example, collate
from unmem.errors import UnmemError
from unmem.logprobs import IGNORE_INDEX, at_least_float32, token_logps
from unmem.methods.base import HIDDEN, LOGITS, SEQ_LOGPS, CachedReference, Side
from unmem.train.batches import label_start
from unmem.train.forward import accepts_logits_to_keep

FORMAT_VERSION = 1


@dataclass
class Packed:
    """Per-example rows of several tensors, concatenated: example i owns rows offsets[i]:offsets[i+1]."""

    tensors: dict[str, torch.Tensor]
    offsets: list[int]
    meta: dict[str, Any] = field(default_factory=dict)

    def rows(self, i: int, name: str) -> torch.Tensor:
        return self.tensors[name][self.offsets[i] : self.offsets[i + 1]]

    @classmethod
    def from_examples(cls, per_example: list[dict[str, torch.Tensor]], meta: dict[str, Any]) -> Packed:
        names = list(per_example[0]) if per_example else []
        offsets = [0]
        for rows in per_example:
            offsets.append(offsets[-1] + len(next(iter(rows.values()))) if rows else offsets[-1])
        tensors = {name: torch.cat([rows[name] for rows in per_example]) for name in names}
        return cls(tensors, offsets, meta)


class ReferenceNotCacheable(UnmemError):
    """The model's logits are not its output head applied to the head's input (e.g. logit soft-capping)."""


def _head_inputs_hook(store: list[torch.Tensor]) -> Any:
    def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        store.append(args[0])

    return hook


@torch.no_grad()
def _batch_outputs(
    model: torch.nn.Module,
    examples: list[Example],
    kinds: frozenset[str],
    layers: list[int],
    pad_id: int,
    device: torch.device,
    verify_head: bool,
) -> list[dict[str, dict[str, torch.Tensor]]]:
    """For each example of one batch: {kind: {tensor name: rows}}, on the CPU."""
    batch = collate(examples, pad_id)
    input_ids, attention = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    width = input_ids.shape[1]
    window = accepts_logits_to_keep(model)
    start = label_start(batch) if window else 0
    kwargs: dict[str, Any] = {"output_hidden_states": HIDDEN in kinds}
    if window:
        kwargs["logits_to_keep"] = torch.arange(start, width - 1, device=device)
    head = model.get_output_embeddings()
    captured: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(_head_inputs_hook(captured))
    try:
        out = model(input_ids=input_ids, attention_mask=attention, **kwargs)
    finally:
        handle.remove()
    logits = out.logits if window else out.logits[:, :-1]  # (batch, time-1-start, vocab)
    head_inputs = captured[-1] if window else captured[-1][:, :-1]  # (batch, time-1-start, hidden)
    labels = batch["labels"][:, 1 + start :].to(device)
    if verify_head and not torch.allclose(head(head_inputs), logits, rtol=1e-4, atol=1e-4):
        raise ReferenceNotCacheable(
            f"{type(model).__name__}: its logits are not its output head applied to the head's input "
            "(a final soft-cap or scale?), so they cannot be cached; use reference: live"
        )
    results: list[dict[str, dict[str, torch.Tensor]]] = [{} for _ in examples]
    if SEQ_LOGPS in kinds:
        seq = token_logps(logits, labels).sum(-1).cpu()
        for row, result in enumerate(results):
            result[SEQ_LOGPS] = {"seq_logps": seq[row : row + 1]}
    if LOGITS in kinds:
        for row, result in enumerate(results):
            rows = head_inputs[row][labels[row] != IGNORE_INDEX]  # (answer tokens, hidden)
            result[LOGITS] = {"head_inputs": at_least_float32(rows).cpu()}
    if HIDDEN in kinds:
        for row, (example, result) in enumerate(zip(examples, results, strict=True)):
            n = len(example.input_ids)
            result[HIDDEN] = {
                f"layer{layer}": at_least_float32(out.hidden_states[layer][row, :n]).cpu() for layer in layers
            }
    return results


def compute_role(
    model: torch.nn.Module,
    examples: Sequence[Example],
    kinds: frozenset[str],
    *,
    layers: list[int],
    pad_id: int,
    device: torch.device,
    batch_size: int,
    autocast: torch.dtype | None = None,
) -> dict[str, Packed]:
    """{kind: Packed} for every example, in input order; batches are sorted by length (less padding).

    ``autocast``: the run's mixed precision, so that at step 0 the policy and its cached
    reference are the same computation (a live reference always runs in float32).
    """
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    per_example: list[dict[str, dict[str, torch.Tensor]]] = [{} for _ in examples]
    precision = torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None)
    try:
        for first in range(0, len(order), batch_size):
            chosen = order[first : first + batch_size]
            verify = LOGITS in kinds and first == 0  # once: the head reproduces the logits
            with precision:
                outputs = _batch_outputs(
                    model, [examples[i] for i in chosen], kinds, layers, pad_id, device, verify
                )
            for i, result in zip(chosen, outputs, strict=True):
                per_example[i] = result
    finally:
        model.train(was_training)
    return {
        kind: Packed.from_examples([result[kind] for result in per_example], {"layers": layers})
        for kind in kinds
    }


def _key(model_hash: str, role: str, kind: str, examples: Sequence[Example], settings: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    header = {"version": FORMAT_VERSION, "model": model_hash, "role": role, "kind": kind, **settings}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for example in examples:
        digest.update(json.dumps([example.input_ids, example.labels]).encode())
    return digest.hexdigest()[:32]


def _save(path: Path, packed: Packed) -> None:
    tensors = {name: tensor.contiguous() for name, tensor in packed.tensors.items()}
    tensors["offsets"] = torch.tensor(packed.offsets, dtype=torch.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"meta": json.dumps(packed.meta)})
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _load(path: Path) -> Packed:
    with safe_open(str(path), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        meta = json.loads((handle.metadata() or {}).get("meta", "{}"))
    offsets = tensors.pop("offsets").tolist()
    return Packed(tensors, offsets, meta)


class ReferenceCache:
    """Every declared reference output, per role and kind, and the frozen output head that turns
    cached head inputs back into logits. Attaches a batch's rows to it; builds reference Sides."""

    def __init__(
        self,
        outputs: dict[str, dict[str, Packed]],
        head: torch.nn.Module | None,
        report: dict[str, Any],
        autocast: torch.dtype | None = None,
    ) -> None:
        self.outputs = outputs
        self.head = head
        self.report = report  # for summary.json: files, seconds, reuse
        self.autocast = autocast  # the precision the outputs were computed in; the head runs in it too

    def attach(self, role: str, batch: dict[str, Any], examples: Sequence[Example]) -> dict[str, Any]:
        """Add ``batch["ref"]``: the rows' outputs laid out like the batch (head inputs at label
        positions, hidden states at input positions, zeros elsewhere); returns the batch."""
        kinds = self.outputs.get(role)
        if not kinds:
            return batch
        ref: dict[str, Any] = {}
        if SEQ_LOGPS in kinds:
            ref["seq_logps"] = torch.cat([kinds[SEQ_LOGPS].rows(e.index, "seq_logps") for e in examples])
        if LOGITS in kinds:
            labels = batch["labels"][:, 1:]
            ref["head_inputs"] = _laid_out(kinds[LOGITS], "head_inputs", examples, labels != IGNORE_INDEX)
        if HIDDEN in kinds:
            packed = kinds[HIDDEN]
            real = batch["attention_mask"].bool()
            ref["hidden"] = {
                layer: _laid_out(packed, f"layer{layer}", examples, real) for layer in packed.meta["layers"]
            }
        batch["ref"] = ref
        return batch

    @torch.no_grad()
    def side(self, batch: dict[str, Any], start: int) -> Side:
        """The reference's Side on a batch that carries its cached outputs, logits from column ``start``."""
        if "ref" not in batch:
            raise ValueError("the batch carries no cached reference outputs (was the cache attached?)")
        ref = batch["ref"]
        logits = None
        if "head_inputs" in ref and self.head is not None:
            inputs = ref["head_inputs"][:, start:]  # (batch, time-1-start, hidden)
            dtype = self.autocast or torch.float32
            with torch.autocast(inputs.device.type, dtype=dtype, enabled=self.autocast is not None):
                logits = self.head(inputs)  # (batch, time-1-start, vocab)
        return Side(
            logits=logits,
            labels=batch["labels"][:, 1 + start :],
            attention_mask=batch["attention_mask"],
            hidden=dict(ref.get("hidden", {})),
            label_offset=start,
            cached=CachedReference(seq_logps=ref.get("seq_logps")),
        )


def _laid_out(packed: Packed, name: str, examples: Sequence[Example], where: torch.Tensor) -> torch.Tensor:
    """(batch, width, dim): example rows put at the True positions of ``where`` (batch, width), zeros elsewhere."""
    first = packed.rows(examples[0].index, name)
    out = first.new_zeros(*where.shape, first.shape[-1])
    for row, example in enumerate(examples):
        values = packed.rows(example.index, name)
        if len(values) != int(where[row].sum()):
            raise ValueError(f"cached reference does not fit example {example.index}: its tokens changed")
        out[row, where[row]] = values
    return out


@dataclass
class CacheRequest:
    """What to compute: {role: kinds} over {role: examples}, with the settings that shape the outputs."""

    declared: dict[str, frozenset[str]]
    examples: dict[str, Sequence[Example]]
    layers: list[int]
    pad_id: int
    batch_size: int  # inference only: larger than a training batch costs less memory than one
    autocast: torch.dtype | None = None  # the run's mixed precision (bf16), None for float32


def _role_kind(
    model: torch.nn.Module,
    request: CacheRequest,
    role: str,
    kind: str,
    device: torch.device,
    path: Path | None,
) -> Packed:
    """One (role, kind) from ``path``, or computed on ``model`` and saved there."""
    if path is not None and path.is_file():
        return _load(path)
    model.to(device)
    packed = compute_role(
        model,
        request.examples[role],
        frozenset({kind}),
        layers=request.layers,
        pad_id=request.pad_id,
        device=device,
        batch_size=request.batch_size,
        autocast=request.autocast,
    )[kind]
    if path is not None:
        _save(path, packed)
    return packed


def build_reference_cache(
    model: torch.nn.Module,
    request: CacheRequest,
    device: torch.device,
    *,
    model_hash: str,
    cache_dir: Path | None,
) -> ReferenceCache:
    """Load each (role, kind) from ``cache_dir`` or compute it on ``model`` (then save it there).

    Raises ReferenceNotCacheable when the model's logits cannot be rebuilt from its head.
    """
    start = time.perf_counter()
    outputs: dict[str, dict[str, Packed]] = {}
    files: dict[str, dict[str, Any]] = {}
    for role, kinds in request.declared.items():
        outputs[role] = {}
        for kind in sorted(kinds):
            settings = {
                "layers": request.layers if kind == HIDDEN else None,
                "dtype": str(next(model.parameters()).dtype),
                "autocast": str(request.autocast),
            }
            name = (
                f"{role}-{kind}-{_key(model_hash, role, kind, request.examples[role], settings)}.safetensors"
            )
            path = None if cache_dir is None else cache_dir / name
            reused = path is not None and path.is_file()
            outputs[role][kind] = _role_kind(model, request, role, kind, device, path)
            files[f"{role}/{kind}"] = {"file": str(path) if path else None, "reused": reused}
    head = None
    if any(LOGITS in kinds for kinds in request.declared.values()):
        head = copy.deepcopy(model.get_output_embeddings()).to(device).eval().requires_grad_(False)
    report = {"mode": "cached", "seconds": round(time.perf_counter() - start, 3), "outputs": files}
    return ReferenceCache(outputs, head, report, request.autocast)
