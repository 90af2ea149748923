"""Small helpers shared by the method files: config checks, the optional retain term, and
simple forget-question batches for methods whose ``setup`` / ``finalize`` runs a model.

Not a method (the leading underscore keeps ``unmem.methods`` from importing it as one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from unmem.errors import UnmemError
from unmem.methods.base import FOCUS_MODES, LOGITS, LossInputs, retain_term

RETAIN_LOSSES = ("nll", "kl")


def check_number(name: str, value: Any, *, low: float = 0.0, strict: bool = True) -> None:
    """A finite real number above ``low`` (``>=`` when not strict); the message names the bad value."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > low if strict else value >= low
    if not ok:
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {relation} {low:g}, got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; known: {', '.join(choices)}")


def check_int(name: str, value: Any, *, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_focus(focus: Any, focus_coeff: Any) -> None:
    """The ``focus`` / ``focus_coeff`` pair of a focused forget loss (``base.focus_weights``)."""
    check_choice("focus", focus, FOCUS_MODES)
    check_number("focus_coeff", focus_coeff)


def add_retain(
    loss: torch.Tensor, logs: dict[str, float], inputs: LossInputs, alpha: float, kind: str
) -> torch.Tensor:
    """``loss + α·R`` (R = retain NLL or KL to the reference); nothing is read when α = 0."""
    if alpha == 0:
        return loss
    retain = retain_term(inputs, kind)
    logs[f"retain_{kind}"] = float(retain.detach())
    return loss + alpha * retain


def retain_needs(cfg: Any) -> dict[str, bool]:
    """Needs of a method whose only optional part is ``cfg.alpha`` · R(``cfg.retain_loss``)."""
    return {"retain": cfg.alpha > 0}


def retain_reference(cfg: Any) -> dict[str, set[str]]:
    """What R(``cfg.retain_loss``) reads from the reference: its distribution on retain, for "kl"."""
    return {"retain": {LOGITS}} if cfg.alpha > 0 and cfg.retain_loss == "kl" else {}


def merge_outputs(*declared: dict[str, set[str]]) -> dict[str, frozenset[str]]:
    """Union of reference-output declarations ({role: kinds}), for ``ref_outputs``."""
    merged: dict[str, set[str]] = {}
    for outputs in declared:
        for role, kinds in outputs.items():
            merged.setdefault(role, set()).update(kinds)
    return {role: frozenset(kinds) for role, kinds in merged.items() if kinds}


def pad_id(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        token_id = getattr(tokenizer, f"{name}", None)
        if token_id is not None:
            return int(token_id)
    raise UnmemError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")


def record_batches(
    tokenizer: Any,
    items: Sequence[tuple[str, str] | str | dict[str, Any]],
    *,
    batch_size: int = 8,
    max_length: int | None = 512,
) -> Iterator[dict[str, torch.Tensor]]:
    """Right-padded batches of (question, answer) pairs, plain passages or text windows
    (``prompt`` / ``gt`` dicts), tokenised as the collator does.

    Yields ``input_ids``, ``attention_mask`` and unshifted ``labels`` (batch, time): labels
    are -100 on prompt and padding, so ``labels != -100`` marks the answer's input positions.
    The prompt format is the collator's default for this tokenizer (chat template if it has one).
    """
    from unmem.data.collate import PromptFormat, collate, encode_qa, encode_text, encode_window

    fmt = PromptFormat.for_tokenizer(tokenizer)
    pad = pad_id(tokenizer)

    def encode(item: tuple[str, str] | str | dict[str, Any]) -> Any:
        if isinstance(item, str):
            return encode_text(tokenizer, item, max_length=max_length)
        if isinstance(item, dict):
            return encode_window(tokenizer, item, max_length=max_length)
        return encode_qa(tokenizer, item[0], item[1], fmt, max_length=max_length)

    for start in range(0, len(items), batch_size):
        examples = [encode(item) for item in items[start : start + batch_size]]
        batch = collate(examples, pad, padding_side="right")
        yield {key: batch[key] for key in ("input_ids", "attention_mask", "labels")}


def num_layers(model: torch.nn.Module) -> int:
    config = getattr(model, "config", None)
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise UnmemError(f"cannot tell how many layers {type(model).__name__} has (no config.num_hidden_layers)")


def hidden_size(model: torch.nn.Module) -> int:
    value = getattr(getattr(model, "config", None), "hidden_size", None)
    if isinstance(value, int):
        return value
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None and hasattr(embeddings, "embedding_dim"):
        return int(embeddings.embedding_dim)
    raise UnmemError(f"cannot tell the hidden size of {type(model).__name__} (no config.hidden_size)")


# Where decoder layers live, per architecture family (Llama/Qwen/Mistral, GPT-2/GPT-Neo, GPT-NeoX).
_LAYER_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers")


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    for path in _LAYER_PATHS:
        node: Any = model
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if isinstance(node, torch.nn.ModuleList):
            return list(node)
    raise UnmemError(
        f"cannot find the decoder layers of {type(model).__name__} (looked for "
        f"{', '.join(_LAYER_PATHS)}); add its path to _LAYER_PATHS in src/unmem/methods/_common.py"
    )
