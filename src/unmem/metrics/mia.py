"""Membership-inference attacks and MUSE's PrivLeak.

Sign convention for every ``*_scores`` function: **higher = more likely a member**
(seen in training). The plain membership AUC (``membership_auc``) treats forget
samples as positives (1) and holdout samples as negatives (0): 1.0 = the attack
separates them perfectly, 0.5 = chance. An ideal unlearned model sits near the retain
model's AUC, which is ~0.5 when forget and holdout come from one distribution.

PrivLeak (``privleak``) uses MUSE's own AUC convention instead (see there).

Attacks (open-unlearning ``src/evals/metrics/mia``, MUSE ``privleak``):
- LOSS (Yeom et al. 2018): -NLL.
- zlib (Carlini et al. 2021, "Extracting Training Data from LLMs"): -NLL / zlib bytes.
- Min-K% (Shi et al. 2024, "Detecting Pretraining Data from LLMs").
- Min-K%++ (Zhang et al. 2024, "Min-K%++: Improved Baseline for Detecting Pre-Training Data").
- Reference (Carlini et al. 2021): NLL_ref - NLL.
- Gradient norm (Wang et al. 2024, "Pandora's White-Box"): -||∇θ NLL||.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import torch

from unmem.logprobs import at_least_float32
from unmem.metrics.stats import MetricResult, as_float_list, roc_auc

DEFAULT_K = 0.4


def loss_scores(nlls: Sequence[float]) -> np.ndarray:
    """LOSS attack: -NLL (token-mean), members have lower loss."""
    return -np.asarray(nlls, dtype=float)


def zlib_scores(nlls: Sequence[float], texts: Sequence[str]) -> np.ndarray:
    """zlib attack: -NLL / len(zlib.compress(text.encode("utf-8"))).

    NLL is the token-mean NLL (log perplexity), as in Carlini et al. ("ratio of log
    perplexity and zlib entropy"), MUSE (``PPL/zlib`` = HF loss / zlib) and open-unlearning
    (``avg_loss / zlib``); negated so higher = member. ``texts`` are the scored strings.
    """
    if len(nlls) != len(texts):
        raise ValueError(f"{len(nlls)} NLLs but {len(texts)} texts")
    entropy = np.array([len(zlib.compress(t.encode("utf-8"))) for t in texts], dtype=float)
    return -np.asarray(nlls, dtype=float) / entropy


def min_k_count(n_tokens: int, k: float) -> int:
    """How many tokens Min-K% keeps: floor(k·n), at least 1 (MUSE and open-unlearning floor
    with ``int(n * k)``; MUSE has no minimum and gives NaN on very short texts).
    A 1e-9 slack keeps k·n that is an integer in exact arithmetic (3 x 1/3) from flooring down."""
    if not 0.0 < k <= 1.0:
        raise ValueError(f"Min-K% fraction k must be in (0, 1], got {k}")
    return max(1, math.floor(n_tokens * k + 1e-9))


def min_k_one(values: Sequence[float], k: float = DEFAULT_K) -> float:
    """Mean of the lowest ``min_k_count(n, k)`` values; NaN for an empty sequence."""
    arr = np.sort(np.asarray(values, dtype=float))
    if arr.size == 0:
        return float("nan")
    return float(arr[: min_k_count(arr.size, k)].mean())


def min_k_scores(token_logps: Sequence[Sequence[float]], k: float = DEFAULT_K) -> np.ndarray:
    """Min-K% Prob: mean of the lowest k fraction of token log-probs (higher = member).

    MUSE and open-unlearning return the negation (a loss); the AUC they report is the same.
    """
    return np.array([min_k_one(lp, k) for lp in token_logps], dtype=float)


def min_k_plus_plus_scores(token_zscores: Sequence[Sequence[float]], k: float = DEFAULT_K) -> np.ndarray:
    """Min-K%++: Min-K% over the per-token z-scores of ``token_zscores`` (higher = member)."""
    return min_k_scores(token_zscores, k)


def token_zscores(
    logps_vocab: torch.Tensor, labels: torch.Tensor, *, min_sigma: float = 1e-6
) -> torch.Tensor:
    """Min-K%++ per-token score z_t = (log p(x_t) - μ_t) / σ_t.

    ``logps_vocab`` (tokens, vocab) is a full-vocabulary log-softmax, ``labels`` (tokens,)
    the observed next tokens. μ_t = Σ_v p(v)·log p(v) and σ_t² = Σ_v p(v)·(log p(v))² - μ_t²
    are the mean and variance of log p(v) under the model's own distribution (the variance
    is computed in two passes, Σ p·(log p - μ)², for float32 stability). σ is clamped
    to ``min_sigma`` so a one-hot prediction gives a large finite z instead of NaN.
    Returns (tokens,) float32 (float64 for float64 input).
    """
    logps = at_least_float32(logps_vocab)
    probs = logps.exp()
    # Terms with p = 0 (log p = -inf on masked vocab entries) contribute 0, not NaN.
    live = probs > 0
    mu = torch.where(live, probs * logps, 0.0).sum(-1)
    # Two-pass variance Σ p·(log p - μ)², equal to Σ p·(log p)² - μ² but without the
    # cancellation that form suffers on near-uniform distributions.
    var = torch.where(live, probs * (logps - mu.unsqueeze(-1)).square(), 0.0).sum(-1)
    sigma = var.sqrt().clamp(min=min_sigma)
    target = logps.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)
    return (target - mu) / sigma


def reference_scores(nlls: Sequence[float], ref_nlls: Sequence[float]) -> np.ndarray:
    """Reference attack: NLL_ref - NLL, i.e. -(loss - loss_ref); members have the lower
    loss relative to a reference model that never saw them."""
    if len(nlls) != len(ref_nlls):
        raise ValueError(f"{len(nlls)} NLLs but {len(ref_nlls)} reference NLLs")
    return np.asarray(ref_nlls, dtype=float) - np.asarray(nlls, dtype=float)


def gradnorm_scores(grad_norms: Sequence[float]) -> np.ndarray:
    """Gradient-norm attack: -||∇θ NLL|| (members sit near a minimum: small gradients)."""
    return -np.asarray(grad_norms, dtype=float)


def membership_auc(
    forget_scores: Sequence[float], holdout_scores: Sequence[float], *, name: str = "mia"
) -> MetricResult:
    """ROC-AUC of an attack, forget = members (1) vs holdout = non-members (0).

    ``per_sample`` is the forget scores followed by the holdout scores
    (``extra["n_forget"]`` marks the split).
    """
    forget = as_float_list(forget_scores)
    holdout = as_float_list(holdout_scores)
    auc = roc_auc(forget, holdout)
    return MetricResult(
        f"{name}_auc", auc, forget + holdout, {"n_forget": len(forget), "n_holdout": len(holdout)}
    )


def muse_auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """AUC as MUSE's ``privleak`` computes it: holdout is the *positive* class and the
    classifier score is member-likeness (``roc_curve(y, -ppl)`` with y = 1 for holdout).

    That equals 1 - membership AUC: a model that memorised the forget set gets ~0, a
    model that never saw it ~0.5.
    """
    return roc_auc(holdout_scores, forget_scores)


def privleak(auc_unlearned: float, auc_retrain: float) -> float:
    """MUSE PrivLeak = (AUC_unlearned - AUC_retrain) / AUC_retrain x 100, on MUSE AUCs
    (``muse_auc``, Min-40% scores).

    ≈ 0 for a perfect unlearner; strongly negative (toward -100) for a model that still
    memorises the forget set (its AUC -> 0); positive for over-unlearning. NaN when
    AUC_retrain is 0 (the ratio is undefined).
    """
    if auc_retrain == 0:
        return float("nan")
    return (auc_unlearned - auc_retrain) / auc_retrain * 100.0


def privleak_from_scores(
    unlearned_forget: Sequence[float],
    unlearned_holdout: Sequence[float],
    retrain_forget: Sequence[float],
    retrain_holdout: Sequence[float],
) -> MetricResult:
    """PrivLeak from member-likeness scores (use ``min_k_scores(..., k=0.4)``) of the
    unlearned and the retrain model; ``extra`` holds both MUSE AUCs."""
    auc_unl = muse_auc(unlearned_forget, unlearned_holdout)
    auc_ret = muse_auc(retrain_forget, retrain_holdout)
    return MetricResult(
        "privleak", privleak(auc_unl, auc_ret), None, {"auc_unlearned": auc_unl, "auc_retrain": auc_ret}
    )
