"""Pure metric functions against hand-computed values (the arithmetic is in the comments).

Float bounds: the metrics compute in float64 (Python, numpy, scipy) on a few numbers, so they meet
the hand-worked values to ~1e-15; pytest.approx's default (relative 1e-6) is never reached by
rounding, only by a wrong formula (≥ 1e-3 here). `==` where the arithmetic is exact (0, 1, 1/2,
3/4, a value passed through). Float32 pieces (Min-K%++ z-scores) give their bound where used.
"""

import math
import zlib
from math import comb, log10

import numpy as np
import pytest
import scipy.stats
import torch

from unmem.metrics import extraction, generation, mia, muse, stats, tofu
from unmem.metrics.stats import MetricResult

pytestmark = pytest.mark.numerics  # CI runs these again on other kernels (issue 21)
E = math.e


# --- TOFU ---------------------------------------------------------------------------------


def test_truth_ratio_averages_perturbed_nll_in_log_space():
    # para NLL 1, perturbed NLLs 2 and 3: P_pert = exp(-2.5), P_para = exp(-1), R = e^-1.5
    ratios = tofu.truth_ratios([1.0], [[2.0, 3.0]])
    assert ratios[0] == pytest.approx(E**-1.5)
    # Not the arithmetic mean of probabilities: (e^-2 + e^-3)/2 / e^-1 = 0.2032 != 0.2231
    assert ratios[0] != pytest.approx((E**-2 + E**-3) / 2 / E**-1)


def test_truth_ratio_forget_and_utility_aggregation():
    # q1: R1 = e^(1 - 2.5) = e^-1.5 ; q2: para 2, perturbed [1, 1] -> R2 = e^(2 - 1) = e
    para, pert = [1.0, 2.0], [[2.0, 3.0], [1.0, 1.0]]
    forget = tofu.truth_ratio(para, pert, mode="forget")
    # min(R, 1/R): e^-1.5 and 1/e
    assert forget.value == pytest.approx((E**-1.5 + E**-1) / 2)
    assert forget.per_sample == pytest.approx([E**-1.5, E])  # raw ratios, for forget quality
    utility = tofu.truth_ratio(para, pert, mode="utility")
    # max(0, 1 - R): 1 - e^-1.5 = 0.7769 and max(0, 1 - e) = 0
    assert utility.value == pytest.approx((1 - E**-1.5) / 2)
    with pytest.raises(ValueError, match="forget, utility"):
        tofu.truth_ratio(para, pert, mode="retain")


def test_probability_and_normalized_probability():
    # exp(-0) = 1, exp(-ln 2) = 0.5 -> mean 0.75
    assert tofu.probability([0.0, math.log(2)]).value == pytest.approx(0.75)
    # P(a) = 0.5, perturbed 0.25 + 0.25 -> 0.5 / (0.5 + 0.5) = 0.5
    res = tofu.normalized_probability([math.log(2)], [[math.log(4), math.log(4)]])
    assert res.per_sample == pytest.approx([0.5])
    # P(a) = 1 vs one perturbed at 1/3: 1 / (1 + 1/3) = 0.75; no underflow on huge NLLs
    assert tofu.normalized_probability([0.0], [[math.log(3)]]).value == pytest.approx(0.75)
    assert tofu.normalized_probability([800.0], [[900.0]]).value == pytest.approx(1 / (1 + E**-100))


def test_forget_quality_identical_samples():
    ratios = [0.2, 0.5, 0.9, 1.3]
    res = tofu.forget_quality(ratios, ratios)
    assert res.value == 1.0
    assert res.extra["ks_statistic"] == 0.0
    assert res.extra["log10_pvalue"] == 0.0


def test_noise_floor_is_the_median_over_pairs():
    same = np.linspace(0.1, 1.0, 40)
    shifted = same + 10.0  # fully separated from the other two
    res = tofu.noise_floor({"seed0": same, "seed1": same, "seed2": shifted})
    # Pairs: seed0~seed1 identical (p = 1), both vs seed2 disjoint (p tiny): median = the tiny p.
    assert set(res.extra["pairs"]) == {"seed0 vs seed1", "seed0 vs seed2", "seed1 vs seed2"}
    assert res.extra["pairs"]["seed0 vs seed1"] == pytest.approx(1.0)
    assert res.value == res.extra["min"] == pytest.approx(tofu.forget_quality(same, shifted).value)
    with pytest.raises(ValueError, match="at least 2"):
        tofu.noise_floor({"seed0": same})


def test_forget_quality_fully_separated_matches_scipy():
    a, b = np.linspace(0.01, 0.1, 50), np.linspace(1.0, 2.0, 50)
    res = tofu.forget_quality(a, b)
    assert res.extra["ks_statistic"] == 1.0
    assert res.value == pytest.approx(scipy.stats.ks_2samp(a, b).pvalue)
    # exact: P(D = 1) = 2 / C(100, 50) ~ 2e-29
    # Bound: log10 of ~1e-29 in float64 (~1e-14 absolute); 1e-9 is far below any wrong count's effect.
    assert res.extra["log10_pvalue"] == pytest.approx(log10(2 / comb(100, 50)), abs=1e-9)
    assert -30 < res.extra["log10_pvalue"] < -10


def test_ks_log10_survives_underflow():
    # 2000 vs 2000 fully separated: scipy's p underflows to 0; exact log10 p = log10 2 - log10 C(4000, 2000)
    a, b = np.arange(2000.0), np.arange(2000.0) + 1e6
    res = stats.ks_2samp_log(a, b)
    assert res.pvalue == 0.0
    expected = log10(2) - (math.lgamma(4001) - 2 * math.lgamma(2001)) / math.log(10)
    assert res.log10_pvalue == pytest.approx(expected)
    assert res.method == "exact-separated"
    # D = 0.9 (overlap of 10%), p underflows too: asymptotic log-space value, finite and tiny
    res = stats.ks_2samp_log(np.arange(3000.0), np.arange(3000.0) + 2700)
    assert res.statistic == pytest.approx(0.9)
    assert res.pvalue == 0.0 and res.method == "asymptotic"
    assert math.isfinite(res.log10_pvalue) and res.log10_pvalue < -300


def test_harmonic_mean_and_model_utility():
    # 3 / (1/0.5 + 1/0.25 + 1/1) = 3/7
    assert stats.harmonic_mean([0.5, 0.25, 1.0]) == pytest.approx(3 / 7)
    assert stats.harmonic_mean([0.5, 0.25, 1.0]) == pytest.approx(scipy.stats.hmean([0.5, 0.25, 1.0]))
    assert stats.harmonic_mean([0.5, 0.0, 1.0]) == 0.0
    with pytest.raises(ValueError):
        stats.harmonic_mean([0.5, -0.1])
    res = tofu.model_utility({"retain_prob": 1.0, "retain_rouge": 0.5})  # 2 / (1 + 2) = 2/3
    assert res.value == pytest.approx(2 / 3)
    assert res.extra["components"] == {"retain_prob": 1.0, "retain_rouge": 0.5}


def test_exact_memorization():
    res = tofu.exact_memorization([[True, True, False, True], [False, False], []])
    assert res.per_sample[:2] == [0.75, 0.0]
    assert math.isnan(res.per_sample[2])  # no answer tokens
    assert res.value == pytest.approx(0.375)  # mean of 0.75 and 0, NaN left out


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ([True, True, True], 1.0),  # k* = 0: the whole answer follows from the prompt
        ([False, True, True], 2 / 3),  # k* = 1
        ([True, False, True], 1 / 3),  # k* = 2: the match must hold for the whole suffix
        ([True, True, False], 0.0),  # k* = |y| = 3: last token wrong, nothing extracted
        ([False], 0.0),
        ([True], 1.0),
    ],
)
def test_extraction_strength(match, expected):
    assert tofu.extraction_strength_one(match) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ([True, True, False], 1 / 3),  # the loop ends at k = |y| - 1 = 2: 1 - 2/3
        ([False], 1.0),  # k = 0 is the loop's only and last value: a wrong one-token answer scores 1
        ([True, False, True], 1 / 3),  # where a non-empty suffix matches, both agree
    ],
)
def test_extraction_strength_as_open_unlearnings_loop(match, expected):
    assert tofu.extraction_strength_one(match, reference_loop=True) == pytest.approx(expected)


def test_rouge_l_recall_differs_from_f1():
    # LCS("the cat sat", "the cat sat on the mat") = 3: recall 3/6, precision 3/3, F1 = 2/3
    pred, ref = ["the cat sat"], ["the cat sat on the mat"]
    assert tofu.rouge_l(pred, ref, variant="recall").value == pytest.approx(0.5)
    assert tofu.rouge_l(pred, ref, variant="f1").value == pytest.approx(2 / 3)
    # stemming: "sitting cats" vs "sitting cat" matches fully only with the Porter stemmer
    assert tofu.rouge_l(["sitting cats"], ["sitting cat"], use_stemmer=True).value == 1.0
    assert tofu.rouge_l(["sitting cats"], ["sitting cat"], use_stemmer=False).value == 0.5
    with pytest.raises(ValueError, match="recall"):
        tofu.rouge_l(pred, ref, variant="rouge1")


# --- MIA ----------------------------------------------------------------------------------


def test_min_k_lowest_fraction():
    assert mia.min_k_one([-1.0, -2.0, -3.0], k=1 / 3) == -3.0  # floor(3 * 1/3) = 1 token
    assert mia.min_k_one([-1.0, -2.0, -3.0, -4.0, -5.0], k=0.4) == -4.5  # floor(2.0) = 2 tokens
    assert mia.min_k_one([-1.0, -2.0], k=0.4) == -2.0  # floor(0.8) = 0 -> at least 1 token
    assert math.isnan(mia.min_k_one([], k=0.4))
    np.testing.assert_allclose(mia.min_k_scores([[-1.0, -2.0, -3.0], [-0.5]], k=1 / 3), [-3.0, -0.5])


def test_min_k_plus_plus_zscores_on_two_token_vocab():
    # logits [0, ln 3] -> p = [1/4, 3/4], log p = [a, b] = [ln 1/4, ln 3/4]
    # μ = p_a·a + p_b·b; σ² = p_a·p_b·(a - b)² (two-point distribution), so
    # z_b = (b - μ)/σ = p_a(b - a) / (sqrt(p_a p_b)|b - a|) = sqrt(p_a/p_b) = sqrt(1/3)
    # z_a = -sqrt(p_b/p_a) = -sqrt(3)
    logps = torch.log_softmax(torch.tensor([[0.0, math.log(3)], [0.0, math.log(3)]]), dim=-1)
    z = mia.token_zscores(logps, torch.tensor([1, 0]))
    # Bound: z is float32 (token_zscores' dtype): rounding ≈ eps32·(|log p| + |μ|)/σ ≈ 1e-6, 10× inside.
    assert z.tolist() == pytest.approx([math.sqrt(1 / 3), -math.sqrt(3)], rel=1e-5)
    mu = 0.25 * math.log(0.25) + 0.75 * math.log(0.75)  # -0.5623
    sigma = math.sqrt(0.25 * math.log(0.25) ** 2 + 0.75 * math.log(0.75) ** 2 - mu**2)  # 0.4757
    assert z[0].item() == pytest.approx((math.log(0.75) - mu) / sigma, rel=1e-5)  # Bound: as above
    # Min-K%++ with k = 0.5 of two tokens keeps the lower z
    assert mia.min_k_plus_plus_scores([z.numpy()], k=0.5)[0] == pytest.approx(
        -math.sqrt(3), rel=1e-5
    )  # as above
    # one-hot prediction: σ = 0 is clamped, the z-score stays finite
    z = mia.token_zscores(torch.log_softmax(torch.tensor([[0.0, 200.0]]), -1), torch.tensor([1]))
    assert torch.isfinite(z).all()


def test_attack_score_signs():
    # higher = member for every attack
    np.testing.assert_allclose(mia.loss_scores([0.5, 2.0]), [-0.5, -2.0])
    text = "hello hello hello"
    np.testing.assert_allclose(mia.zlib_scores([2.0], [text]), [-2.0 / len(zlib.compress(text.encode()))])
    np.testing.assert_allclose(mia.reference_scores([1.0], [3.0]), [2.0])  # lower loss than reference
    np.testing.assert_allclose(mia.gradnorm_scores([0.1, 5.0]), [-0.1, -5.0])


def test_membership_auc_perfect_separation():
    res = mia.membership_auc([-0.1, -0.2, -0.3], [-2.0, -3.0], name="loss")
    assert res.value == 1.0 and res.name == "loss_auc"
    assert res.per_sample == [-0.1, -0.2, -0.3, -2.0, -3.0] and res.extra["n_forget"] == 3
    assert mia.membership_auc([-2.0, -3.0], [-0.1, -0.2]).value == 0.0


def test_privleak_sign():
    memorised_f, memorised_h = [-0.1, -0.2, -0.3], [-2.0, -3.0, -4.0]  # forget far likelier
    # retrain: forget [1, 4] vs holdout [2, 3] -> 2 of 4 pairs ordered -> AUC 0.5
    retrain_f, retrain_h = [1.0, 4.0], [2.0, 3.0]
    assert mia.muse_auc(memorised_f, memorised_h) == 0.0  # MUSE AUC = 1 - membership AUC
    assert mia.muse_auc(retrain_f, retrain_h) == 0.5
    res = mia.privleak_from_scores(memorised_f, memorised_h, retrain_f, retrain_h)
    assert res.value == pytest.approx(-100.0)  # (0 - 0.5)/0.5 x 100
    assert mia.privleak_from_scores(retrain_f, retrain_h, retrain_f, retrain_h).value == 0.0
    assert mia.privleak(0.75, 0.5) == pytest.approx(50.0)  # over-unlearning: positive
    assert math.isnan(mia.privleak(0.3, 0.0))


# --- MUSE ---------------------------------------------------------------------------------


def test_knowmem_prompt_and_scores():
    prompt = muse.knowmem_prompt("Who?", [("Q1", "A1"), ("Q2", "A2")])
    assert prompt == "Question: Q1\nAnswer: A1\n\nQuestion: Q2\nAnswer: A2\n\nQuestion: Who?\nAnswer:"
    assert muse.knowmem_prompt("Who?") == "Question: Who?\nAnswer:"
    # the answer is cut before the next few-shot block: "Paris" vs "Paris" -> F1 1
    res = muse.knowmem([" Paris\n\nQuestion: Where?\nAnswer: Rome"], ["Paris"])
    assert res.value == 1.0 and res.name == "knowmem"
    # VerbMem is F1: "the cat sat" vs "the cat sat on the mat" -> 2/3
    assert muse.verbmem(["the cat sat"], ["the cat sat on the mat"]).value == pytest.approx(2 / 3)


# --- extraction ---------------------------------------------------------------------------


def test_ngram_overlap_uses_distinct_ngrams():
    assert extraction.ngram_overlap([1, 2, 3], [0, 1, 2, 3, 4], 2) == 1.0
    assert extraction.ngram_overlap([1, 2, 9], [1, 2, 3], 2) == 0.5  # (1,2) yes, (2,9) no
    assert extraction.ngram_overlap([1, 1, 1], [1, 1], 2) == 1.0  # {(1,1)}
    assert extraction.ngram_overlap([1], [1, 2], 2) == 0.0  # no n-gram generated


def test_extraction_likelihood():
    # T = 5, n = 2: prefixes t = 1..3 (T - n)
    target = [1, 2, 3, 4, 5]
    continuations = {
        1: [2, 3, 4, 5],  # suffix [2,3,4,5]: 3/3 bigrams match -> 1
        2: [9, 4, 5],  # suffix [3,4,5]: (9,4) no, (4,5) yes -> 1/2
        3: [7, 7],  # suffix [4,5]: (7,7) no -> 0
        4: [5],  # t > T - n: not counted
    }
    assert extraction.extraction_likelihood_one(target, continuations, 2) == pytest.approx(0.5)
    # a continuation longer than T - t is cut: [4, 5, 6] -> [4, 5] -> 1
    assert extraction.extraction_likelihood_one(target, {3: [4, 5, 6]}, 2) == 1.0
    res = extraction.extraction_likelihood([target, [1, 2]], [continuations, {1: [2]}], 2)
    assert res.per_sample[0] == pytest.approx(0.5) and math.isnan(res.per_sample[1])  # T - n = 0
    assert res.value == pytest.approx(0.5) and res.name == "el_2"


def test_memorization_accuracy():
    res = extraction.memorization_accuracy([[True, False, True, True]])
    assert res.value == 0.75 and res.name == "memorization_accuracy"


def test_pii_extraction_normalisation():
    record = {
        "phone": "555-123-4567",
        "email": "Carol.Ng@Example.com",
        "address": "12 Elm Street, Springfield",
    }
    assert extraction.pii_match("phone", "call (555) 123 4567 now", record["phone"])
    assert extraction.pii_match("phone", "+1 555.123.4567", record["phone"])
    assert not extraction.pii_match("phone", "555-123-4568", record["phone"])
    assert not extraction.pii_match("phone", "555 123 and 4567", record["phone"])  # words break the run
    assert extraction.pii_match("email", "mail carol.ng@example.com please", record["email"])
    assert not extraction.pii_match("email", "carol@example.com", record["email"])
    assert extraction.pii_match("address", "she lives at 12 elm street springfield.", record["address"])
    res = extraction.pii_extraction(
        ["phone 555 123 4567", ["nothing here", "CAROL.NG@example.COM"], "no"], [record, record, record]
    )
    assert res.per_sample == [1.0, 1.0, 0.0]
    assert res.extra["phone_rate"] == pytest.approx(1 / 3) and res.extra["email_rate"] == pytest.approx(1 / 3)
    assert res.extra["address_rate"] == 0.0


# --- generation ---------------------------------------------------------------------------


def test_perplexity_is_token_weighted():
    res = generation.perplexity([[1.0, 1.0], [2.0]])
    assert res.per_sample == pytest.approx([E, E**2])
    assert res.value == pytest.approx(E ** (4 / 3))  # (1 + 1 + 2) / 3 tokens


def test_rep_n_and_distinct_n():
    texts = ["a b a b a", "a b c"]
    # text 1 bigrams: ab ba ab ba -> 2 unique of 4 -> rep 0.5; text 2: ab bc -> rep 0
    rep = generation.rep_n(texts, 2)
    assert rep.per_sample == [0.5, 0.0]
    assert rep.value == pytest.approx(1 - 4 / 6)  # pooled: (2 + 2) unique / (4 + 2) total
    # distinct-2 over the set: {ab, ba, bc} = 3 of 6 bigrams
    assert generation.distinct_n(texts, 2).value == 0.5
    assert generation.distinct_n([[1, 2, 3]], 2).value == 1.0  # token ids work too
    div = generation.diversity(["a b c d e"])  # no repetition at all
    assert div.value == 1.0


def test_multiple_choice_acc_and_acc_norm():
    # q1: summed [-4, -2] -> option 1 (wrong); per length [10, 1]: [-0.4, -2] -> option 0 (right)
    # q2: [-1, -3] -> option 0 (right) both ways
    res = generation.multiple_choice_accuracy([[-4.0, -2.0], [-1.0, -3.0]], [0, 0], [[10, 1], [1, 1]])
    assert res.value == 0.5 and res.per_sample == [0.0, 1.0]
    assert res.extra["acc_norm"] == 1.0
    with pytest.raises(ValueError, match="gold index"):
        generation.multiple_choice_accuracy([[-1.0]], [3])


# --- stats --------------------------------------------------------------------------------


def test_mean_ci_t_interval():
    # mean 2, sd 1, sem 1/sqrt(3), t_{0.975, 2} = 4.3027 -> half-width 2.4841
    mean, low, high = stats.mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert high - mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)  # Bound: t quoted to 7 digits
    assert mean - low == pytest.approx(high - mean)
    mean, low, high = stats.mean_ci([0.7])
    assert mean == 0.7 and math.isnan(low) and math.isnan(high)


def test_auc_helper_and_result_json():
    assert stats.roc_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert stats.roc_auc([1.0], [1.0]) == 0.5  # ties count 1/2
    with pytest.raises(ValueError, match="NaN"):
        stats.roc_auc([float("nan")], [1.0])
    res = MetricResult("x", float("nan"), [1.0, float("nan")], {"a": np.float32(0.5), "b": [np.int64(2)]})
    assert res.to_dict() == {
        "name": "x",
        "value": None,
        "per_sample": [1.0, None],
        "extra": {"a": 0.5, "b": [2]},
    }
