"""TOFU (Maini et al. 2024) on forget, retain, real_world and world_facts QA.

Per set: probability (normalised by the perturbed answers on real_world / world_facts, as
TOFU does), ROUGE-L recall of greedy answers, truth ratio (forget: mean min(R, 1/R);
others: mean max(0, 1 - R); against the paraphrase on forget / retain, the answer on
real_world / world_facts, as TOFU's reference evaluator); on forget also exact memorisation
and extraction strength over the answer's tokens (eos left out).
``model_utility`` = harmonic mean of the 9 utility numbers (of those the data has);
``forget_quality`` = KS p-value of the per-question forget truth ratios against the retain
model's, with its log10 and the KS statistic. Formulas: ``unmem.metrics.tofu``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from unmem.data.benchmarks import EvalData
from unmem.errors import input_error
from unmem.evaluation.reference import nan_list, per_sample_column
from unmem.evaluation.registry import EvalInputs, FamilyContext, FamilyResult, RetainHooks, register_family
from unmem.evaluation.session import ModelSession, num, sample_rows
from unmem.metrics import tofu
from unmem.metrics.stats import harmonic_mean

UTILITY_SETS = ("retain", "real_world", "world_facts")
GENERAL_SETS = ("real_world", "world_facts")  # TOFU's real authors and world facts
IDS = (
    *(f"forget_{m}" for m in ("prob", "rouge", "truth_ratio", "exact_mem", "extraction_strength")),
    *(f"{s}_{m}" for s in UTILITY_SETS for m in ("prob", "rouge", "truth_ratio")),
    "model_utility",
    "forget_quality",
    "forget_quality_log10",
    "forget_ks_stat",
)
NO_RETAIN = "no retain model to compare with (--retain-model or --retain-results)"


def base_field(session: ModelSession, name: str) -> str:
    """Truth-ratio denominator, as TOFU's reference evaluator reads it: the paraphrase on forget
    and retain (the answer when a record has none), the answer on real_world / world_facts
    (TOFU's files have no paraphrase there; the world's do, and are read the same way)."""
    if name in GENERAL_SETS:
        return "answer"
    records = session.data.qa[name]
    return "paraphrased_answer" if all(r.get("paraphrased_answer") for r in records) else "answer"


def answer_matches(session: ModelSession, name: str) -> list:
    """Teacher-forced argmax matches of the answer's tokens for exact memorisation and extraction
    strength: the eos appended to every answer is not one of them (the reference's "ignore eos
    prediction"). It stays in the probability, as in training."""
    matches = [s.argmax_match for s in session.qa_scores(name)]
    has_eos = getattr(session.tokenizer, "eos_token_id", None) is not None
    return [m[:-1] for m in matches] if has_eos else matches


def forget_truth_ratios(session: ModelSession) -> np.ndarray:
    para = [s.nll for s in session.qa_scores("forget", base_field(session, "forget"))]
    return tofu.truth_ratios(para, session.perturbed_nlls("forget"))


def _score_set(session: ModelSession, name: str) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """One QA set: its metrics (``prob``, ``rouge``, ``truth_ratio`` ...) and per-sample columns."""
    records = session.data.qa[name]
    answer_scores = session.qa_scores(name)
    answer_nlls = [s.nll for s in answer_scores]
    generations = session.answers(name)
    rouge = tofu.rouge_l(generations, [r["answer"] for r in records], variant="recall")
    columns: dict[str, list[Any]] = {"nll": answer_nlls, "rouge": rouge.per_sample or []}
    pert = session.perturbed_nlls(name) if session.data.has_truth_ratio(name) else None
    if name in ("forget", "retain") or pert is None:
        prob = tofu.probability(answer_nlls)
    else:  # TOFU normalises the answer's probability by the perturbed answers' on these sets
        prob = tofu.normalized_probability(answer_nlls, pert)
    columns["prob"] = prob.per_sample or []
    values: dict[str, Any] = {"prob": num(prob.value), "rouge": num(rouge.value), "truth_ratio": None}
    if pert is not None:
        para = [s.nll for s in session.qa_scores(name, base_field(session, name))]
        tr = tofu.truth_ratio(para, pert, mode="forget" if name == "forget" else "utility")
        columns["truth_ratio"] = tr.per_sample or []
        values["truth_ratio"] = num(tr.value)
    if name == "forget":
        matches = answer_matches(session, name)
        em = tofu.exact_memorization(matches)
        es = tofu.extraction_strength(matches, reference_loop=session.fmt.reference)
        values |= {"exact_mem": num(em.value), "extraction_strength": num(es.value)}
        columns |= {"exact_mem": em.per_sample or [], "extraction_strength": es.per_sample or []}
    columns["generation"] = generations
    return values, columns


def _forget_quality(
    own: list[float], ctx: FamilyContext, metrics: dict[str, float | None], result: FamilyResult
) -> None:
    reference = ctx.reference
    if reference is None:
        result.reasons["forget_quality"] = NO_RETAIN
        return
    retain_ratios = nan_list(reference.values.get("forget_truth_ratios"))
    if not retain_ratios or not own:
        result.reasons["forget_quality"] = "no forget truth ratios (the data has no perturbed answers)"
        return
    try:
        fq = tofu.forget_quality(own, retain_ratios)
    except ValueError as exc:  # every ratio NaN on one side
        result.details["forget_quality_error"] = str(exc)
        result.reasons["forget_quality"] = str(exc)
        return
    metrics["forget_quality"] = num(fq.value)
    metrics["forget_quality_log10"] = num(fq.extra["log10_pvalue"])
    metrics["forget_ks_stat"] = num(fq.extra["ks_statistic"])
    result.details["forget_quality"] = fq.extra | {"retain_reference": reference.source}


def run(ctx: FamilyContext) -> FamilyResult:
    session = ctx.session
    metrics: dict[str, float | None] = dict.fromkeys(IDS)
    result = FamilyResult(metrics, {"sets": {}})
    utility: dict[str, float] = {}
    for name in ("forget", *UTILITY_SETS):
        records = session.data.qa.get(name) or []
        if not records:
            continue
        values, columns = _score_set(session, name)
        for key, value in values.items():
            metrics[f"{name}_{key}"] = value
            if name != "forget" and key in ("prob", "rouge", "truth_ratio") and value is not None:
                utility[f"{name}_{key}"] = float(value)
        result.rows += sample_rows(name, records, **columns)
        has_tr = session.data.has_truth_ratio(name)
        result.details["sets"][name] = {
            "n": len(records),
            "truth_ratio_denominator": base_field(session, name) if has_tr else None,
        }
    if utility:
        metrics["model_utility"] = harmonic_mean(utility.values())
    result.details["utility_components"] = utility
    result.details["utility_complete"] = len(utility) == 3 * len(UTILITY_SETS)
    own = [row["truth_ratio"] for row in result.rows if row["set"] == "forget" and "truth_ratio" in row]
    _forget_quality(own, ctx, metrics, result)
    return result


def reference_from_model(session: ModelSession) -> dict[str, Any]:
    if not session.data.has_truth_ratio("forget"):
        return {"forget_truth_ratios": None}
    return {"forget_truth_ratios": forget_truth_ratios(session).tolist()}


def reference_from_results(root: Path, data: EvalData) -> dict[str, Any] | None:
    path = root / "per_sample" / "tofu.jsonl"
    ratios = per_sample_column(path, "forget", "truth_ratio")
    if ratios is None:
        return None
    if len(ratios) != len(data.qa.get("forget", [])):
        raise input_error(
            path,
            f"{len(ratios)} forget rows but this evaluation has {len(data.qa.get('forget', []))} "
            "forget questions; evaluate the retain model on the same data",
        )
    return {"forget_truth_ratios": ratios}


def supports(inputs: EvalInputs) -> bool:
    """Forget QA, or only the utility sets (the ``texts`` layout scores real-world and world-facts QA)."""
    return any(inputs.data.qa.get(name) for name in ("forget", *UTILITY_SETS))


register_family(
    "tofu",
    run,
    ids=IDS,
    supports=supports,
    description="TOFU: probability, ROUGE-L, truth ratio, model utility, forget quality (KS test)",
    headline=(
        "forget_quality",
        "forget_quality_log10",
        "model_utility",
        "forget_truth_ratio",
        "forget_prob",
        "forget_rouge",
        "forget_exact_mem",
        "forget_extraction_strength",
    ),
    retain=RetainHooks(reference_from_model, reference_from_results),
    order=10,
)
