"""Tokenizer training, model presets built from scratch, and loading any causal LM directory.

The built-in models are Llama-style ``transformers`` models (RMSNorm, rotary
positions, SwiGLU), small enough to memorise the world on a laptop CPU. Anything
written here is a normal Hugging Face directory that ``AutoModelForCausalLM`` loads.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from unmem.errors import UnmemError
from unmem.io import hash_files
from unmem.presets import PRESETS, ModelPreset, get_preset  # noqa: F401 (callers import them from here too)

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``texts``; deterministic for the same texts and size."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS.values()),
        show_progress=False,
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, **SPECIAL_TOKENS)
    tokenizer.model_max_length = 10**6
    return tokenizer


def build_model(preset: ModelPreset, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """A freshly initialised Llama-style model (input and output embeddings tied: fewer parameters)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_hidden_layers,
        num_attention_heads=preset.num_attention_heads,
        num_key_value_heads=preset.num_attention_heads,
        max_position_embeddings=preset.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def preset_dict(preset: ModelPreset) -> dict[str, Any]:
    return asdict(preset)


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def context_length(model: torch.nn.Module) -> int:
    """How many tokens the model reads at once (its position limit, at most 4096; else 2048)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return min(value, 4096)
    return 2048


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UnmemError(f"--device must be auto, cpu or cuda[:N], got '{device}'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UnmemError(f"--device {device}: no CUDA device is available; use --device cpu")
    return torch.device(device)


def load_tokenizer(path: str | Path) -> Any:
    """Load a tokenizer and make sure it can pad; a missing pad token is a clear error."""
    path = Path(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise UnmemError(f"{path}: no tokenizer could be loaded ({str(exc).splitlines()[0]})") from None
    if tokenizer.pad_token_id is None:
        raise UnmemError(
            f"{path}: the tokenizer has no pad token; add one to tokenizer_config.json "
            '(e.g. "pad_token": "<|endoftext|>", or the eos token) and retry'
        )
    return tokenizer


MODEL_CARD = "unmem_model.json"  # written by a run whose output is an adapter or method layers over a base
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


def card_base(model_dir: Path) -> Path | None:
    """The base model an adapter or method layers sit on, as their model card names it: an
    absolute path, or one relative to ``model_dir`` (a model store's versions, which move with it)."""
    card = Path(model_dir) / MODEL_CARD
    if not card.is_file():
        return None
    base = json.loads(card.read_text()).get("base_model")
    return Path(model_dir) / base if base else None


def model_files(model_dir: Path) -> list[Path]:
    """Weights, config and tokenizer files; an adapter's or method layers' base model counts too."""
    files = sorted({p for pattern in MODEL_FILE_PATTERNS for p in model_dir.glob(pattern) if p.is_file()})
    base = card_base(model_dir)
    if base is not None and base.is_dir():
        files += model_files(base)
    return files


def model_hash(model_dir: str | Path) -> str:
    """Hash of a model's weights, config and tokenizer files: what a result or a checkpoint came from."""
    path = resolve_model_dir(model_dir)
    files = model_files(path)
    if not files:
        raise UnmemError(f"{path}: no model files (*.safetensors, *.bin, config.json) to hash")
    return hash_files(files)


def resolve_model_dir(path: str | Path) -> Path:
    """Accept a model directory or an unmem run directory (whose model lives in ``model/``)."""
    path = Path(path)
    if not path.is_dir():
        raise UnmemError(f"{path}: model directory not found")
    if (path / "model").is_dir() and not (path / "config.json").is_file():
        path = path / "model"
    if not (path / "config.json").is_file() and not (path / MODEL_CARD).is_file():
        raise UnmemError(
            f"{path}: not a model directory (no config.json); point --model at a Hugging Face model folder"
        )
    return path


def load_model(
    path: str | Path,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
) -> tuple[torch.nn.Module, Any]:
    """Load a causal LM directory (or an unmem run's output) and its tokenizer.

    A run that trained a LoRA adapter or a method's own layers (EUL) stores only those
    plus ``unmem_model.json`` naming the base model; they are put back on the base here.
    """
    path = resolve_model_dir(path)
    torch_device = resolve_device(device)
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if torch_device.type == "cuda" else torch.float32
    else:
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(
            dtype
        )
        if torch_dtype is None:
            raise UnmemError(f"--dtype must be auto, float32, bfloat16 or float16, got '{dtype}'")
    tokenizer = load_tokenizer(path)
    card_path = path / MODEL_CARD
    if card_path.is_file():
        model = _load_over_base(path, json.loads(card_path.read_text()), torch_dtype, trust_remote_code)
    else:
        model = _from_pretrained(path, torch_dtype, trust_remote_code)
    model.eval()
    return model.to(torch_device), tokenizer


def _from_pretrained(path: Path, dtype: torch.dtype, trust_remote_code: bool) -> torch.nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` with its failures as one line that says what to do."""
    import pickle

    from safetensors import SafetensorError

    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    except SafetensorError as exc:
        raise UnmemError(
            f"{path}: a *.safetensors file is truncated or corrupt ({str(exc).splitlines()[0]}); "
            "copy or save the model again"
        ) from None
    except pickle.UnpicklingError:
        raise UnmemError(
            f"{path}: the *.bin weights hold Python objects besides tensors, and unmem never unpickles "
            "those (they can run code); convert the weights to safetensors"
        ) from None
    except (OSError, ValueError) as exc:
        if "custom code" in str(exc) and not trust_remote_code:
            raise UnmemError(
                f"{path}: the model ships its own Python code (auto_map in config.json); "
                "pass --trust-remote-code if you trust it"
            ) from None
        raise UnmemError(f"{path}: could not load the model ({str(exc).splitlines()[0]})") from None


def _load_over_base(
    path: Path, card: dict[str, Any], dtype: torch.dtype, trust_remote_code: bool
) -> torch.nn.Module:
    base_dir = path / card["base_model"]
    if (base_dir / MODEL_CARD).is_file():  # a store's adapter over an adapter: load the chain
        base = _load_over_base(
            base_dir, json.loads((base_dir / MODEL_CARD).read_text()), dtype, trust_remote_code
        )
    elif not (base_dir / "config.json").is_file():
        raise UnmemError(
            f"{path / MODEL_CARD}: base model {base_dir} not found; it must stay where the run found it"
        )
    else:
        base = _from_pretrained(base_dir, dtype, trust_remote_code)
    if card["kind"] == "lora":
        from peft import PeftModel

        return PeftModel.from_pretrained(base, path).merge_and_unload()
    if card["kind"] == "method_layers":
        from safetensors.torch import load_file

        from unmem.methods.registry import get_method

        spec = get_method(card["method"])
        if spec.prepare_model is None:
            raise UnmemError(f"{path / MODEL_CARD}: method '{spec.name}' has no layers of its own to load")
        model = spec.prepare_model(base, spec.make_config(card.get("method_args")))
        missing = model.load_state_dict(load_file(path / "method_layers.safetensors"), strict=False)
        if missing.unexpected_keys:
            raise UnmemError(
                f"{path}: method layers do not fit the base model: {missing.unexpected_keys[:3]}"
            )
        return model
    raise UnmemError(f"{path / MODEL_CARD}: unknown kind '{card['kind']}'")


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The reference model: an eval-mode copy without gradients, made once before training."""
    reference = copy.deepcopy(model)
    reference.eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    return reference
