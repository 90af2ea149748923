"""EUL in a store: each request trains its own unlearning layer on the base, and the version holds
all requests' layers fused (``unmem.methods.eul.fuse_unlearning_layers``: W = (Σ G_i + εI)^-1 Σ G_i W_i
per linear map, G_i the Gram matrix of request i's forget inputs to it). Request k trains one
layer, never layers 1..k-1: their weights and Gram matrices wait in their own versions (``eul/``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from unmem.errors import UnmemError
from unmem.io import read_json, write_json
from unmem.models import MODEL_CARD
from unmem.store.versions import EUL_DIR, GRAMS_FILE, LAYER_FILE, Version

METHOD_LAYERS = "method_layers.safetensors"
# What decides the layers' shapes: requests fused together must agree on it.
STRUCTURE = ("reduction_factor", "activation")


def check_structure(current: Version, method_args: dict[str, Any]) -> None:
    """A new layer must have the shapes of those it is fused with: fail before training otherwise."""
    from unmem.methods.eul import EULConfig

    card = read_json(current.path / MODEL_CARD)
    if card.get("method") != "eul":
        raise UnmemError(f"version {current.number} holds layers of method {card.get('method')!r}, not EUL's")
    theirs = EULConfig(**(card.get("method_args") or {}))
    ours = EULConfig(**method_args)
    for name in STRUCTURE:
        if getattr(theirs, name) != getattr(ours, name):
            raise UnmemError(
                f"EUL fusion: this request's {name}={getattr(ours, name)!r} gives layers of another shape than "
                f"the {len(current.components)} fused in version {current.number} ({name}={getattr(theirs, name)!r}); "
                f"set method_args.{name} to {getattr(theirs, name)!r}"
            )


def stage_layers(
    run_dir: Path, stage: Path, base: Version, components: list[Version], base_ref: str
) -> dict[str, Any]:
    """Write a layers version into ``stage``: this request's layer and Grams (``eul/``), every
    request's layers fused (``method_layers.safetensors``), the tokenizer and the model card naming
    ``base_ref``. Returns what the ledger records of the fusion."""
    from safetensors.torch import load_file, save_file

    from unmem.methods.eul import GRAMS_FILE as RUN_GRAMS
    from unmem.methods.eul import fuse_unlearning_layers

    model_dir = run_dir / "model"
    (stage / EUL_DIR).mkdir(parents=True)
    shutil.copy2(model_dir / METHOD_LAYERS, stage / EUL_DIR / LAYER_FILE)
    shutil.copy2(run_dir / RUN_GRAMS, stage / EUL_DIR / GRAMS_FILE)
    weights = [load_file(str(v.path / EUL_DIR / LAYER_FILE)) for v in components]
    grams = [load_file(str(v.path / EUL_DIR / GRAMS_FILE)) for v in components]
    weights.append(load_file(str(stage / EUL_DIR / LAYER_FILE)))
    grams.append(load_file(str(stage / EUL_DIR / GRAMS_FILE)))
    # One request: its own layer as trained (the closed form with εI would only approximate it).
    fused = weights[0] if len(weights) == 1 else fuse_unlearning_layers(weights, grams)
    save_file({k: v.contiguous() for k, v in fused.items()}, str(stage / METHOD_LAYERS))
    for path in model_dir.iterdir():
        if path.is_file() and path.name not in (METHOD_LAYERS, MODEL_CARD):
            shutil.copy2(path, stage / path.name)
    card = json.loads((model_dir / MODEL_CARD).read_text()) | {"base_model": base_ref}
    write_json(stage / MODEL_CARD, card)
    return {"fused": [v.number for v in components], "base": base.number}


def base_reference(base: Version, stage: Path) -> str:
    """How a staged version names what it sits on: relative inside the store (it moves with the
    store), the absolute path of a referenced source."""
    return str(base.path) if base.referenced else os.path.relpath(base.path, stage)
