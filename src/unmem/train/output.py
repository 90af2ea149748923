"""Publishing a finished run: finite weights only, written atomically next to their record."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from unmem.errors import UnmemError
from unmem.io import write_json
from unmem.methods.registry import MethodSpec
from unmem.models import MODEL_CARD


def assert_finite(model: torch.nn.Module, desc: str, last_checkpoint: Path | None) -> None:
    """Refuse to publish weights holding NaN or ±inf (a finite last loss does not prove them finite)."""
    for name, parameter in model.named_parameters():
        if not torch.isfinite(parameter).all():
            kept = f"; last good checkpoint: {last_checkpoint}" if last_checkpoint else ""
            raise UnmemError(
                f"{desc}: weight {name} is not finite after training; nothing was published. "
                f"Lower --lr or change hyper-parameters{kept}"
            )


def save_unlearned(
    model: torch.nn.Module,
    tokenizer: Any,
    spec: MethodSpec,
    config: Any,
    base: Path,
    out: Path,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Full weights, a LoRA adapter, or a method's own layers; the last two name their base model."""
    tokenizer.save_pretrained(out / "model")
    if spec.prepare_model is not None:
        from safetensors.torch import save_file

        weights = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(weights, out / "model" / "method_layers.safetensors")
        card = {
            "kind": "method_layers",
            "base_model": str(base),
            "method": spec.name,
            "method_args": config.method_args,
        }
        write_json(out / "model" / MODEL_CARD, card)
    elif config.lora:
        model.save_pretrained(out / "model", state_dict=state_dict)
        write_json(out / "model" / MODEL_CARD, {"kind": "lora", "base_model": str(base), "method": spec.name})
    else:
        model.save_pretrained(out / "model", state_dict=state_dict)


def method_config_json(method_cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(method_cfg)
