"""TOFU metrics (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs").

Pure functions of per-sample numbers that ``scoring`` computed: token-mean answer
NLLs, teacher-forced argmax matches, generated strings. Conventions follow TOFU's
reference code (``aggregate_eval_stat.py``) and open-unlearning
(``src/evals/metrics/memorization.py``), with departures noted where they occur.

NLL here is always the token-mean cross-entropy over answer tokens, P̃ = exp(-NLL).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from rouge_score import rouge_scorer
from scipy.special import logsumexp

from unmem.metrics.stats import (
    MetricResult,
    as_float_list,
    harmonic_mean,
    ks_2samp_log,
    nanmean,
)

ROUGE_VARIANTS = ("recall", "precision", "f1")


def probability(nlls: Sequence[float]) -> MetricResult:
    """TOFU "Prob." on forget/retain sets: mean over questions of P̃(a|q) = exp(-NLL)."""
    probs = np.exp(-np.asarray(nlls, dtype=float))
    return MetricResult("prob", nanmean(probs), as_float_list(probs))


def normalized_probability(
    answer_nlls: Sequence[float], perturbed_nlls: Sequence[Sequence[float]]
) -> MetricResult:
    """TOFU "Prob." on real-author / world-fact sets: P̃(a) / (P̃(a) + Σ_j P̃(perturbed_j)).

    Computed in log space: -NLL_a - logsumexp(-NLL_a, -NLL_1, ..., -NLL_k).
    """
    if len(answer_nlls) != len(perturbed_nlls):
        raise ValueError(f"{len(answer_nlls)} answer NLLs but {len(perturbed_nlls)} perturbed groups")
    values = []
    for nll_a, group in zip(answer_nlls, perturbed_nlls, strict=True):
        log_all = np.concatenate([[-nll_a], -np.asarray(group, dtype=float)])
        values.append(float(np.exp(-nll_a - logsumexp(log_all))))
    return MetricResult("normalized_prob", nanmean(values), values)


def truth_ratios(paraphrased_nlls: Sequence[float], perturbed_nlls: Sequence[Sequence[float]]) -> np.ndarray:
    """Per-question R = P̃_pert / P̃_para.

    P̃_pert = exp(-mean_j NLL_j): the token-mean NLLs of the perturbed answers are averaged
    in *log space* and then exponentiated (a geometric mean of the P̃_j), exactly as TOFU's
    ``get_truth_ratio`` (``np.exp(avg_perturbed_loss - avg_paraphrased_loss)``, there
    inverted) and open-unlearning's ``truth_ratio`` do. So R = exp(NLL_para - mean_j NLL_j).
    """
    if len(paraphrased_nlls) != len(perturbed_nlls):
        raise ValueError(
            f"{len(paraphrased_nlls)} paraphrase NLLs but {len(perturbed_nlls)} perturbed groups"
        )
    para = np.asarray(paraphrased_nlls, dtype=float)
    pert = np.array([np.mean(np.asarray(g, dtype=float)) if len(g) else np.nan for g in perturbed_nlls])
    return np.exp(para - pert)


def truth_ratio(
    paraphrased_nlls: Sequence[float], perturbed_nlls: Sequence[Sequence[float]], *, mode: str = "forget"
) -> MetricResult:
    """TOFU truth ratio, aggregated per set; ``per_sample`` holds the raw ratios R.

    ``mode="forget"``: mean(min(R, 1/R)), 1 when the model cannot tell true from false
    (ideal after unlearning). ``mode="utility"`` (retain, real authors, world facts):
    mean(max(0, 1 - R)), high when the paraphrase is much likelier than the perturbations.
    """
    ratios = truth_ratios(paraphrased_nlls, perturbed_nlls)
    with np.errstate(divide="ignore"):
        if mode == "forget":
            per = np.minimum(ratios, 1.0 / ratios)
        elif mode == "utility":
            per = np.maximum(0.0, 1.0 - ratios)
        else:
            raise ValueError(f"unknown truth-ratio mode {mode!r}; known: forget, utility")
    return MetricResult("truth_ratio", nanmean(per), as_float_list(ratios), {"mode": mode})


def forget_quality(
    unlearned_truth_ratios: Sequence[float], retain_truth_ratios: Sequence[float]
) -> MetricResult:
    """TOFU forget quality: KS-test p-value between the unlearned and the retain model's
    per-question forget-set truth ratios (the retain model itself scores 1.0).

    TOFU tests exp(NLL_pert - NLL_para) = 1/R; the KS statistic is invariant under that
    monotone map, so the p-value is the same. ``extra`` holds the KS statistic and log10 p,
    computed in log space when p underflows (see ``stats.ks_2samp_log``).
    """
    ks = ks_2samp_log(unlearned_truth_ratios, retain_truth_ratios)
    extra = {"ks_statistic": ks.statistic, "log10_pvalue": ks.log10_pvalue, "log10_method": ks.method}
    return MetricResult("forget_quality", ks.pvalue, None, extra)


def noise_floor(retain_truth_ratios: Mapping[str, Sequence[float]]) -> MetricResult:
    """Forget quality between equally clean models: every pair of retain models (e.g. trained
    with other seeds), so a reader knows what "indistinguishable from retraining" scores.

    ``value`` is the median p-value over the pairs; ``extra`` holds the minimum and each
    pair's p-value. A forget quality far below the median only says "unlike this retain
    model" when the median itself is high.
    """
    names = list(retain_truth_ratios)
    if len(names) < 2:
        raise ValueError(f"a noise floor needs at least 2 retain models, got {len(names)}")
    pairs = {
        f"{a} vs {b}": float(forget_quality(retain_truth_ratios[a], retain_truth_ratios[b]).value)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    }
    values = list(pairs.values())
    return MetricResult("noise_floor", float(np.median(values)), None, {"min": min(values), "pairs": pairs})


def model_utility(components: Mapping[str, float] | Sequence[float]) -> MetricResult:
    """TOFU model utility: harmonic mean of {prob, ROUGE, truth ratio} x {retain, real
    authors, world facts}; any zero gives 0."""
    if isinstance(components, Mapping):
        extra = {"components": {k: float(v) for k, v in components.items()}}
        values = list(components.values())
    else:
        values = list(components)
        extra = {"components": as_float_list(values)}
    return MetricResult("model_utility", harmonic_mean(values), None, extra)


def exact_memorization(argmax_match: Sequence[Sequence[bool]]) -> MetricResult:
    """Per sample, the fraction of answer tokens whose teacher-forced argmax equals the label
    (Tirumala et al. 2022; open-unlearning ``exact_memorization``). No tokens -> NaN."""
    values = [float(np.mean(m)) if len(m) else float("nan") for m in argmax_match]
    return MetricResult("exact_memorization", nanmean(values), values)


def extraction_strength_one(argmax_match: Sequence[bool], *, reference_loop: bool = False) -> float:
    """ES = 1 - k*/|y|, k* = min{k in 0..|y| : argmax matches y at every position >= k}
    (Carlini et al. 2021, as used by open-unlearning).

    The empty suffix (k = |y|) always matches, so k* = |y| and ES = 0 when even the last
    token is wrong. open-unlearning's loop stops at k = |y| - 1 instead and gives 1/|y| there
    (``reference_loop=True`` reproduces it; a wrong one-token answer then scores 1); by default
    we keep the formula's value.
    Examples: [T,T,T] -> 1; [F,T,T] -> 2/3; [T,F,T] -> 1/3; [T,T,F] -> 0 (reference: 1/3).
    """
    match = np.asarray(argmax_match, dtype=bool)
    if match.size == 0:
        return float("nan")
    misses = np.flatnonzero(~match)
    k_star = 0 if misses.size == 0 else int(misses[-1]) + 1
    if reference_loop:
        k_star = min(k_star, match.size - 1)
    return 1.0 - k_star / match.size


def extraction_strength(
    argmax_match: Sequence[Sequence[bool]], *, reference_loop: bool = False
) -> MetricResult:
    values = [extraction_strength_one(m, reference_loop=reference_loop) for m in argmax_match]
    return MetricResult("extraction_strength", nanmean(values), values)


def rouge_l_scores(
    predictions: Sequence[str], references: Sequence[str], *, use_stemmer: bool = True
) -> list[dict[str, float]]:
    """ROUGE-L {recall, precision, f1} per pair via ``rouge_score`` (reference = target)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
    out = []
    for pred, ref in zip(predictions, references, strict=True):
        score = scorer.score(ref, pred)["rougeL"]
        out.append({"recall": score.recall, "precision": score.precision, "f1": score.fmeasure})
    return out


def rouge_l(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    variant: str = "recall",
    use_stemmer: bool = True,
) -> MetricResult:
    """Mean ROUGE-L of generations vs gold. TOFU reports recall with the Porter stemmer
    (the default here); MUSE reports F1 without it (``unmem.metrics.muse``)."""
    if variant not in ROUGE_VARIANTS:
        raise ValueError(f"unknown ROUGE-L variant {variant!r}; known: {', '.join(ROUGE_VARIANTS)}")
    values = [s[variant] for s in rouge_l_scores(predictions, references, use_stemmer=use_stemmer)]
    return MetricResult(f"rougeL_{variant}", nanmean(values), values, {"use_stemmer": use_stemmer})
