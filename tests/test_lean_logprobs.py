"""The lean label log-probs (chunked logsumexp, hand-written backward) equal the full
log-softmax path in value and gradient: compared in float64 (the same computation, so to float64
rounding: tests/float_bounds.py), exact to float64 rounding in gradcheck, and from bf16 logits to
bf16 rounding."""

from __future__ import annotations

import pytest
import torch

from float_bounds import EPS32, EPS_BF16, assert_same_computation
from unmem import logprobs
from unmem.logprobs import IGNORE_INDEX, token_logps

pytestmark = pytest.mark.numerics  # CI runs these again on other kernels (issue 21)


def full_token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The reference implementation: the whole log-softmax (float32 or wider), gathered and masked."""
    mask = labels != IGNORE_INDEX
    logps = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1).gather(
        -1, labels.masked_fill(~mask, 0).unsqueeze(-1)
    )
    return logps.squeeze(-1) * mask


def _inputs(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = (4 * torch.randn(3, 7, 50, generator=generator)).to(dtype)
    labels = torch.randint(0, 50, (3, 7), generator=generator)
    labels[:, :2] = IGNORE_INDEX  # prompt
    labels[0, -2:] = IGNORE_INDEX  # padding
    return logits, labels


@pytest.mark.parametrize("chunk", [1 << 24, 7])  # one chunk, and many (a chunk of one row)
def test_lean_matches_full_log_softmax(chunk, monkeypatch):
    monkeypatch.setattr(logprobs, "CHUNK_ELEMENTS", chunk)
    logits, labels = _inputs(torch.float64)
    weights = torch.randn(labels.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lean_in = logits.clone().requires_grad_()
    full_in = logits.clone().requires_grad_()
    lean, full = token_logps(lean_in, labels), full_token_logps(full_in, labels)
    assert_same_computation(lean, full)  # Bound: the same computation in float64.
    assert (lean[labels == IGNORE_INDEX] == 0).all()
    (lean * weights).sum().backward()
    (full * weights).sum().backward()
    assert_same_computation(lean_in.grad, full_in.grad)  # Bound: the same computation in float64.


def test_lean_gradient_is_exact_in_float64():
    logits, labels = _inputs(torch.float64)
    labels = labels[:2, :3].clamp(min=0) % 6  # the autograd function itself takes valid labels only

    def fn(x: torch.Tensor) -> torch.Tensor:
        return logprobs._LabelLogProbs.apply(x, labels)

    assert torch.autograd.gradcheck(fn, (logits[:2, :3, :6].clone().requires_grad_(),))


def test_bf16_logits_are_read_in_float32_and_keep_their_dtype_in_the_gradient():
    logits, labels = _inputs(torch.bfloat16)
    lean_in = logits.clone().requires_grad_()
    lean = token_logps(lean_in, labels)
    assert lean.dtype == torch.float32
    exact = full_token_logps(logits.double(), labels)
    # Bound: float32 logsumexp of 50 terms is off by ≤ 50·eps in its log, z − lse by eps·(|z| + |lse|).
    bound = EPS32 * (50 + 2 * float(exact.abs().max() + logits.abs().max()))
    torch.testing.assert_close(lean.double(), exact, rtol=0, atol=bound)
    lean.sum().backward()
    assert lean_in.grad.dtype == torch.bfloat16
    full_in = logits.double().requires_grad_()
    full_token_logps(full_in, labels).sum().backward()
    # Bound: the gradient softmax − onehot lies in [−1, 1] and is stored in bf16: half an ulp ≤ eps_bf16/2.
    torch.testing.assert_close(lean_in.grad.double(), full_in.grad, rtol=0, atol=EPS_BF16 / 2 + bound)
