"""Token log-probabilities and the label conventions every layer shares.

Data (collation), metrics (scoring) and methods (losses) all need the same two facts:
which label marks "no loss here" and how a label's log-probability is read off the
logits. They live here, below all three, so none of them imports another for it.

``token_logps`` is lean: log p(label) = z_label − logsumexp(z), computed in float32 a
few rows at a time, so the (batch, time, vocab) float32 log-softmax is never held
(49,152 classes for SmolLM2, 128k for Llama 3). Its backward writes the gradient
softmax(z) − onehot(label) once, chunk by chunk, instead of autograd's scatter into a
zero tensor followed by the log-softmax backward.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
# Value of a token weight inside a sensitive span (1.0 elsewhere). It is a marker, not a
# weight: collation cannot know a method's config, so DI maps it to its own ``focus_coeff``.
SENSITIVE_MARKER = 2.0
# Logit elements per float32 chunk (64 MB): bounds the temporaries of the lean path.
CHUNK_ELEMENTS = 1 << 24


def _row_chunks(logits: torch.Tensor) -> list[slice]:
    """Slices of dim 0 whose float32 copies stay under CHUNK_ELEMENTS (at least one row)."""
    per_row = max(1, logits[0].numel()) if len(logits) else 1
    rows = max(1, CHUNK_ELEMENTS // per_row)
    return [slice(start, start + rows) for start in range(0, len(logits), rows)]


class _LabelLogProbs(torch.autograd.Function):
    """log softmax(logits)[label] over the last dim, in float32 or better; labels must be valid indices."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        compute = torch.promote_types(logits.dtype, torch.float32)  # as at_least_float32
        lse = torch.empty(logits.shape[:-1], dtype=compute, device=logits.device)
        for rows in _row_chunks(logits):
            lse[rows] = torch.logsumexp(logits[rows].to(compute), dim=-1)
        picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1).to(compute)
        ctx.save_for_backward(logits, labels, lse)
        return picked - lse

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        logits, labels, lse = ctx.saved_tensors
        grad_logits = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        for rows in _row_chunks(logits):
            g = grad[rows].to(lse.dtype).unsqueeze(-1)  # (rows, ..., 1)
            chunk = torch.exp(logits[rows].to(lse.dtype) - lse[rows].unsqueeze(-1)).mul_(-g)
            chunk.scatter_add_(-1, labels[rows].unsqueeze(-1), g)
            grad_logits[rows] = chunk
        return grad_logits, None


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32, or in its own dtype when that is wider: losses read bf16 activations
    in float32, and a float64 model (the tests' exact reference computation) stays float64."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(…,) log p(label) from (…, vocab) logits, in float32 (float64 for float64 logits); masked
    positions give 0 (never index -100).

    Equal to ``log_softmax(at_least_float32(logits)).gather(labels)`` to rounding (tests/
    test_lean_logprobs.py compares in float64), with the gradient of the same expression.
    """
    mask = labels != IGNORE_INDEX
    safe_labels = labels.masked_fill(~mask, 0)
    logps = _LabelLogProbs.apply(logits, safe_labels)
    return torch.where(mask, logps, torch.zeros((), dtype=logps.dtype, device=logps.device))
