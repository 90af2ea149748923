"""What an evaluation result was computed from: model hashes and the per-family cache key."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from unmem.errors import UnmemError
from unmem.io import cache_key, hash_files, read_json
from unmem.models import MODEL_CARD, resolve_device, resolve_model_dir

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


def model_files(model_dir: Path) -> list[Path]:
    files = sorted({p for pattern in MODEL_FILE_PATTERNS for p in model_dir.glob(pattern) if p.is_file()})
    card = model_dir / MODEL_CARD
    if card.is_file():  # adapter / method layers over a base: the base's weights count too
        base = Path(read_json(card).get("base_model", ""))
        if base.is_dir():
            files += model_files(base)
    return files


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
    model: str,
    data: str,
    dtype: str,
    options: Any,
    retain: str | None,
    extra: Any,
) -> str:
    """Cache key of one family's results: a family whose key matches is not recomputed."""
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
    )
