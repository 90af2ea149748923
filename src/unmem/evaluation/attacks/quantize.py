"""Quantization attacks: round a copy's weights to 8 or 4 bits, then score it (Zhang et al.,
"Catastrophic failure of LLM unlearning via quantization", ICLR 2025: 4-bit quantization of an
unlearned model brought most of the forgotten knowledge back).

Exact fake quantization: each weight is replaced by the value its quantized code decodes to,
in the model's own dtype, so the model runs as before on any device. Two schemes:

- **RTN per channel** (round to nearest, symmetric, one scale per output channel; the
  baseline Zhang et al. and GPTQ/AWQ compare against):
  ``s_i = max_j |W_ij| / q``, ``Q(W)_ij = s_i · clamp(round(W_ij · q / max_j |W_ij|), -q, q)``,
  ``q = 2^(b-1) - 1`` (127 for 8 bits, 7 for 4). The papers write ``s = max|W| / 2^(b-1)``,
  which needs a code ``2^(b-1)`` that a signed b-bit integer does not have; bitsandbytes'
  LLM.int8 row-wise quantization (``int8_vectorwise_quant``) uses ``q = 127`` as here.
- **NF4 per block** (QLoRA, Dettmers et al. 2023): the flattened weight in blocks of 64, each
  scaled by its absmax into [-1, 1] and rounded to the nearest of the 16 NF4 levels (Appendix E;
  a value on a midpoint goes to the lower level), decoded as level × absmax; bitsandbytes'
  ``quantize_4bit(quant_type="nf4")`` without double quantization.

Both match bitsandbytes' CPU kernels value for value (``tests/test_robustness.py`` checks it when
bitsandbytes is installed). unmem does not depend on bitsandbytes: its wheel is 125 MB, mostly CUDA
binaries, and has no per-channel 4-bit RTN. Quantized: every ``nn.Linear`` (and GPT-2 ``Conv1D``)
weight except the output head, as bitsandbytes' ``load_in_4bit`` / ``load_in_8bit`` leave
``lm_head`` (and embeddings, norms and biases) in full precision.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch

from unmem.evaluation.attacks.base import Attacked, register_attack
from unmem.evaluation.session import ModelSession

# QLoRA's NF4 levels (Dettmers et al. 2023, Appendix E), as bitsandbytes ships them.
NF4_LEVELS = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
)  # fmt: skip
NF4_BLOCK = 64  # QLoRA's block size


def rtn_per_channel(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """``weight`` (out_features, in_features) rounded to ``bits``-bit codes, one scale per row."""
    if bits < 2:
        raise ValueError(f"RTN needs at least 2 bits, got {bits}")
    levels = 2 ** (bits - 1) - 1
    w = weight.float()
    absmax = w.abs().amax(dim=1, keepdim=True)
    absmax = torch.where(absmax > 0, absmax, torch.ones_like(absmax))  # an all-zero row stays zero
    codes = torch.round(w * (levels / absmax)).clamp(-levels, levels)
    return (codes * (absmax / levels)).to(weight.dtype)


def nf4_per_block(weight: torch.Tensor, block: int = NF4_BLOCK) -> torch.Tensor:
    """``weight`` rounded to NF4 levels in blocks of ``block`` values of its row-major flattening
    (a shorter last block has its own absmax)."""
    flat = weight.float().reshape(-1)
    pad = -flat.numel() % block
    blocks = torch.nn.functional.pad(flat, (0, pad)).reshape(-1, block)  # zeros leave an absmax as it is
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    scaled = torch.clamp(blocks * (1.0 / absmax.clamp(min=1e-38)), -1, 1)
    levels = torch.tensor(NF4_LEVELS, dtype=torch.float32, device=flat.device)
    index = torch.bucketize(scaled, (levels[:-1] + levels[1:]) / 2)  # midpoint ties go to the lower level
    decoded = (levels[index] * absmax).reshape(-1)[: flat.numel()]
    return decoded.reshape(weight.shape).to(weight.dtype)


def quantized_weights(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The modules whose weight a quantizer rounds: linear maps, not the output head."""
    from transformers.pytorch_utils import Conv1D  # GPT-2's projections: weight (in, out)

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear | Conv1D) and module is not head
    ]


def quantize_copy(
    model: torch.nn.Module, rounding: Callable[[torch.Tensor], torch.Tensor]
) -> torch.nn.Module:
    """A copy of ``model`` with every linear weight replaced by its quantized value."""
    from transformers.pytorch_utils import Conv1D

    quantized = copy.deepcopy(model)
    with torch.no_grad():
        for _, module in quantized_weights(quantized):
            weight = module.weight
            if isinstance(module, Conv1D):  # rows of the transposed weight are its output channels
                weight.copy_(rounding(weight.t()).t())
            else:
                weight.copy_(rounding(weight))
    return quantized.eval()


def _attack(
    rounding: Callable[[torch.Tensor], torch.Tensor], scheme: str
) -> Callable[[ModelSession], Attacked]:
    def apply(session: ModelSession) -> Attacked:
        start = time.perf_counter()
        model = quantize_copy(session.model, rounding)
        n = len(quantized_weights(model))
        seconds = round(time.perf_counter() - start, 3)
        info = {"scheme": scheme, "weights_quantized": n, "quantize_seconds": seconds}
        forget = session.data.qa["forget"]
        return Attacked(model, session.data, list(range(len(forget))), info=info)

    return apply


register_attack(
    "quant_int8",
    _attack(lambda w: rtn_per_channel(w, 8), "RTN, 8 bits, per output channel"),
    kind="quantize",
    description="8-bit round-to-nearest weights, one scale per output channel (LLM.int8's row-wise)",
)
register_attack(
    "quant_int4",
    _attack(lambda w: rtn_per_channel(w, 4), "RTN, 4 bits, per output channel"),
    kind="quantize",
    description="4-bit round-to-nearest weights, one scale per output channel (Zhang et al.'s RTN)",
)
register_attack(
    "quant_nf4",
    _attack(nf4_per_block, f"NF4, blocks of {NF4_BLOCK}"),
    kind="quantize",
    description=f"4-bit NormalFloat weights in blocks of {NF4_BLOCK} (QLoRA, bitsandbytes' nf4)",
)
