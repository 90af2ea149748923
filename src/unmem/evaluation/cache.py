"""What an evaluation result was computed from: model hashes and the per-family cache key."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from unmem.errors import UnmemError
from unmem.io import cache_key, hash_files
from unmem.models import MODEL_CARD, card_base, resolve_device, resolve_model_dir

MODEL_FILE_PATTERNS = (
    "*.safetensors",
    "*.bin",
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "adapter_config.json",
    MODEL_CARD,
)


def base_model(model_dir: Path) -> Path | None:
    """The base model an adapter or method layers sit on (named in their model card), if any."""
    return card_base(model_dir)


def model_files(model_dir: Path) -> list[Path]:
    files = sorted({p for pattern in MODEL_FILE_PATTERNS for p in model_dir.glob(pattern) if p.is_file()})
    base = base_model(model_dir)
    if base is not None and base.is_dir():  # adapter / method layers over a base: its weights count too
        files += model_files(base)
    return files


def check_weights(model_dir: Path) -> None:
    """Fail before anything loads or is written on weights that could not load: a truncated or
    corrupt ``*.safetensors`` (its header says how long it must be), or ``*.bin`` weights that
    hold Python objects besides tensors (unmem never unpickles those). The messages are
    those of ``unmem.models.load_model``; the base model of an adapter is checked too."""
    import pickle

    import torch
    from safetensors import SafetensorError, safe_open

    for path in sorted(model_dir.glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as exc:
            raise UnmemError(
                f"{model_dir}: a *.safetensors file is truncated or corrupt ({path.name}: "
                f"{str(exc).splitlines()[0]}); copy or save the model again"
            ) from None
    bins = [] if any(model_dir.glob("*.safetensors")) else sorted(model_dir.glob("*.bin"))
    for path in bins:  # transformers reads *.bin only without safetensors
        try:
            torch.load(path, weights_only=True, map_location="meta")
        except pickle.UnpicklingError:
            raise UnmemError(
                f"{model_dir}: the *.bin weights hold Python objects besides tensors, and unmem never "
                "unpickles those (they can run code); convert the weights to safetensors"
            ) from None
        except (RuntimeError, OSError, EOFError) as exc:
            raise UnmemError(f"{path}: unreadable weights ({str(exc).splitlines()[0]})") from None
    base = base_model(model_dir)
    if base is not None and base.is_dir():
        check_weights(base)


def model_hash(model_dir: str | Path) -> str:
    """Hash of a model's weights, config and tokenizer files (the cache key of its results)."""
    path = resolve_model_dir(model_dir)
    files = model_files(path)
    if not files:
        raise UnmemError(f"{path}: no model files (*.safetensors, *.bin, config.json) to hash")
    return hash_files(files)


def dtype_name(device: str, dtype: str) -> str:
    if dtype != "auto":
        return dtype
    return "bfloat16" if resolve_device(device).type == "cuda" else "float32"


def family_key(
    family: str,
    *,
    version: int,
    family_version: int = 1,
    model: str,
    data: str,
    dtype: str,
    options: Any,
    retain: str | None,
    extra: Any,
) -> str:
    """Cache key of one family's results: a family whose key matches is not recomputed.
    ``family_version`` joins the key from 2 on, so results cached before families had versions
    stay valid for every family still at 1."""
    since = {"family_version": family_version} if family_version > 1 else {}
    return cache_key(
        "eval-family",
        v=version,
        family=family,
        model=model,
        data=data,
        dtype=dtype,
        options=asdict(options),
        retain=retain,
        extra=extra,
        **since,
    )
