"""Evaluation metrics: pure scoring functions, one module per family, and one module of
model calls.

Design (after open-unlearning's good parts):

- ``scoring`` is the only module that runs a model. One teacher-forced pass returns a
  ``TokenScores`` per sample (log p of each label token, argmax matches, Min-K%++
  z-scores); ``greedy_generate`` / ``generate_answers`` / ``prefix_continuations``
  generate; ``gradient_norms`` backpropagates.
- ``tofu``, ``mia``, ``muse``, ``extraction``, ``generation`` take numbers and strings
  (lists / numpy arrays) and never see a model, so every formula is tested on
  hand-made values.
- Metric functions return a ``MetricResult(name, value, per_sample, extra)``: the
  aggregate, the per-sample values in input order (NaN where a sample cannot be scored,
  ignored by the aggregate), and secondary numbers. Small building blocks (``*_scores``
  attack scores, ``truth_ratios``, ``ngram_overlap``, ``harmonic_mean``, ``privleak``)
  return plain floats or numpy arrays.

Conventions (details in each module's docstrings):

- NLL = token-mean cross-entropy over answer tokens (eos included); P̃ = exp(-NLL).
- Truth ratio R = P̃_pert / P̃_para with P̃_pert = exp(-mean_j NLL_j): perturbed NLLs are
  averaged in log space, as TOFU and open-unlearning do. Forget aggregation
  mean(min(R, 1/R)); utility mean(max(0, 1 - R)).
- Forget quality = KS p-value; ``extra["log10_pvalue"]`` is finite even when p underflows.
  Its noise floor = the median forget quality between pairs of retain models.
- MIA scores: higher = member. zlib = -NLL / zlib-compressed bytes. Min-K% keeps
  floor(k·n) tokens, at least 1, k = 0.4.
- Membership AUC: forget positive. PrivLeak uses MUSE's AUC (holdout positive =
  1 - membership AUC): memorising model -> strongly negative, perfect unlearner -> 0.
- ROUGE-L: TOFU recall with stemming; MUSE VerbMem and KnowMem F1 without stemming.
"""

from unmem.metrics.extraction import (
    extraction_likelihood,
    memorization_accuracy,
    ngram_overlap,
    pii_extraction,
)
from unmem.metrics.generation import distinct_n, diversity, multiple_choice_accuracy, perplexity, rep_n
from unmem.metrics.mia import (
    gradnorm_scores,
    loss_scores,
    membership_auc,
    min_k_plus_plus_scores,
    min_k_scores,
    muse_auc,
    privleak,
    privleak_from_scores,
    reference_scores,
    zlib_scores,
)
from unmem.metrics.muse import knowmem, knowmem_prompt, verbmem
from unmem.metrics.stats import MetricResult, harmonic_mean, ks_2samp_log, mean_ci, roc_auc
from unmem.metrics.tofu import (
    exact_memorization,
    extraction_strength,
    forget_quality,
    model_utility,
    noise_floor,
    normalized_probability,
    probability,
    rouge_l,
    truth_ratio,
    truth_ratios,
)

__all__ = [
    "MetricResult",
    "distinct_n",
    "diversity",
    "exact_memorization",
    "extraction_likelihood",
    "extraction_strength",
    "forget_quality",
    "gradnorm_scores",
    "harmonic_mean",
    "knowmem",
    "knowmem_prompt",
    "ks_2samp_log",
    "loss_scores",
    "mean_ci",
    "membership_auc",
    "memorization_accuracy",
    "min_k_plus_plus_scores",
    "min_k_scores",
    "model_utility",
    "multiple_choice_accuracy",
    "muse_auc",
    "ngram_overlap",
    "noise_floor",
    "normalized_probability",
    "perplexity",
    "pii_extraction",
    "privleak",
    "privleak_from_scores",
    "probability",
    "reference_scores",
    "rep_n",
    "roc_auc",
    "rouge_l",
    "truth_ratio",
    "truth_ratios",
    "verbmem",
    "zlib_scores",
]
