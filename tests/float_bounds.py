"""The bounds the tests compare floats with, and the float64 runs that make them tight (issue 21).

float32 rounding depends on the kernels: vector width, thread count, BLAS, the order a
reduction is split in. A tolerance picked on one machine (1e-6 on a gradient) fails on
another correct one, so the tests that claim "the same computation, arranged differently"
(cached vs live reference, fused vs separate passes, 2×2 accumulation vs 4×1, resumed vs
uninterrupted, two processes vs one, checkpointed vs stored activations, batched vs alone)
run both sides in float64 and compare with ``assert_same_computation``.

Its bound, SAME_COMPUTATION = 1e-9 of the tensor's largest value: float64's eps is 2.2e-16,
and regrouping a sum of n terms moves it by at most n·eps times their magnitude, so even
1e4 terms carried through the layers and a few Adam steps stay near 1e-12 (measured: at most
2e-15 on the tiny Llama). What the tests guard against (a token, position, example or term
mixed up, dropped or counted twice) moves the results by 1e-4 of that scale or more.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

EPS32 = torch.finfo(torch.float32).eps  # 1.19e-7: one float32 ulp relative to the value
EPS_BF16 = torch.finfo(torch.bfloat16).eps  # 7.8e-3
SAME_COMPUTATION = 1e-9  # of the largest |value|; derived in the module docstring


def assert_same_computation(got: torch.Tensor, expected: torch.Tensor, msg: str | None = None) -> None:
    """``got`` equals ``expected`` to float64 rounding: within SAME_COMPUTATION of its largest value."""
    if expected.dtype != torch.float64:
        raise AssertionError(f"compare the same computation in float64, got {expected.dtype}")
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    prefix = None if msg is None else (lambda text: f"{msg}: {text}")
    torch.testing.assert_close(got, expected, rtol=0, atol=SAME_COMPUTATION * scale, msg=prefix)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def in_float64(train: Any, *args: Any, **kwargs: Any) -> Any:
    """``train(*args, **kwargs)`` with float64 as torch's default dtype: models it builds are float64.
    Module-level, so a spawned training process can unpickle it."""
    with default_dtype(torch.float64):
        return train(*args, **kwargs)


def float64_loading(from_pretrained: Any) -> Any:
    """A stand-in for ``unmem.models._from_pretrained`` that loads every model in float64, whatever
    dtype its caller asked for (unlearning asks for float32); the runs then save float64 weights."""

    def load(path: Any, dtype: torch.dtype, trust_remote_code: bool) -> Any:
        return from_pretrained(path, torch.float64, trust_remote_code)

    return load


def assert_stored_float32(got: Any, expected: Any) -> None:
    """float32 arrays that store two float64 results of the same computation: apart by the float64
    bound (SAME_COMPUTATION of the largest value) plus one float32 rounding of each (eps32 of the value)."""
    import numpy as np

    expected = np.asarray(expected)
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(got, expected, rtol=EPS32, atol=SAME_COMPUTATION * scale)
