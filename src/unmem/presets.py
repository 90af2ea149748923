"""Architectures of the built-in from-scratch models, by name.

Kept apart from ``unmem.models`` (which needs torch and transformers) so that checking a
preset name, as ``unmem train`` does before it finds its models cached, loads nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

from unmem.errors import UnmemError


@dataclass(frozen=True)
class ModelPreset:
    """Architecture of a from-scratch model. ``vocab_size`` is the BPE vocabulary trained on the world."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int = 256  # world sequences are < 100 tokens; passages are cut to this


PRESETS: dict[str, ModelPreset] = {
    # ~0.1M parameters: for tests on the micro world (seconds per epoch).
    "tiny": ModelPreset(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=192, vocab_size=1024
    ),
    # ~0.26M parameters, the default: pretrained on the default world's base corpus and fine-tuned from
    # it, it knows the real facts, refuses strangers and memorises the trained entities (exact
    # memorisation >= 0.95; benchmarks/world_acceptance.py). Trained from scratch on the entities alone,
    # the 1.1M `base` preset reached 0.86 after 15 epochs and ran ~2x fewer tokens/s on 2 cores.
    "small": ModelPreset(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, vocab_size=2048
    ),
    # ~1.1M parameters.
    "base": ModelPreset(
        hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=384, vocab_size=2048
    ),
    # ~6M parameters: for the `tofu` world and users with more time.
    "large": ModelPreset(
        hidden_size=256, num_hidden_layers=6, num_attention_heads=8, intermediate_size=768, vocab_size=4096
    ),
}


def get_preset(name: str) -> ModelPreset:
    if name not in PRESETS:
        raise UnmemError(f"unknown model preset '{name}'; known: {', '.join(PRESETS)}")
    return PRESETS[name]
