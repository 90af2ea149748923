"""Membership inference: ROC-AUC of forget (members) vs holdout (non-members).

On QA sets when the data has forget and holdout QA, else on the PrivLeak passages, else on
the continuations of forget and holdout text windows (the ``texts`` layout; zlib reads the
continuation's text).
Attacks: LOSS, zlib, Min-K%, Min-K%++, reference (with ``reference_model``) and gradient
norm (first ``gradnorm_samples`` per side, QA only). Formulas: ``unmem.metrics.mia``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unmem.data.benchmarks import EvalData
from unmem.evaluation.cache import model_hash
from unmem.evaluation.registry import EvalInputs, FamilyContext, FamilyResult, RetainHooks, register_family
from unmem.evaluation.session import ModelSession, finite, sample_rows
from unmem.metrics import mia, scoring
from unmem.models import load_model
from unmem.results import EvalSummary

CHEAP_ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")
ATTACKS = (*CHEAP_ATTACKS, "reference", "gradnorm")
IDS = tuple(f"mia_{a}_auc" for a in ATTACKS)


def membership_auc(forget: Sequence[float], holdout: Sequence[float]) -> float | None:
    f, h = finite(forget), finite(holdout)
    if f.size == 0 or h.size == 0:
        return None
    return mia.membership_auc(f, h).value


def cheap_attack_scores(session: ModelSession, side: str) -> dict[str, np.ndarray]:
    scores, texts = session.membership_scores(side)
    nlls = [s.nll for s in scores]
    return {
        "loss": mia.loss_scores(nlls),
        "zlib": mia.zlib_scores(nlls, texts),
        "min_k": mia.min_k_scores([s.logps for s in scores], session.opts.min_k),
        "min_k_plus_plus": mia.min_k_plus_plus_scores([s.zscores for s in scores], session.opts.min_k),
    }


def _reference_attack(
    ctx: FamilyContext, reference_model: Path, forget: dict, holdout: dict, details: dict[str, Any]
) -> None:
    session, config = ctx.session, ctx.inputs.config
    ref_model, ref_tok = load_model(reference_model, device=config.device, dtype=config.dtype)
    ref_session = ModelSession(ref_model, ref_tok, session.data, session.opts, session.batch_size)
    for side, scores in (("forget", forget), ("holdout", holdout)):
        own = [s.nll for s in session.membership_scores(side)[0]]
        ref = [s.nll for s in ref_session.membership_scores(side)[0]]
        scores["reference"] = mia.reference_scores(own, ref)
    details["reference_model"] = str(reference_model)


def _gradnorm_attack(session: ModelSession, forget: dict, holdout: dict, details: dict[str, Any]) -> None:
    n = session.opts.gradnorm_samples
    for side, scores in (("forget", forget), ("holdout", holdout)):
        records = session.data.qa[side][:n]
        norms = scoring.gradient_norms(
            session.model,
            session.tokenizer,
            [r["question"] for r in records],
            [r["answer"] for r in records],
            session.fmt,
            max_length=session.max_length,
        )
        scores["gradnorm"][: len(records)] = mia.gradnorm_scores(norms)
    details["gradnorm_samples_per_side"] = n


def run(ctx: FamilyContext) -> FamilyResult:
    session = ctx.session
    data, opts = session.data, session.opts
    kind = data.membership_kind()
    forget, holdout = cheap_attack_scores(session, "forget"), cheap_attack_scores(session, "holdout")
    n_f, n_h = len(forget["loss"]), len(holdout["loss"])
    for scores, n in ((forget, n_f), (holdout, n_h)):
        scores["reference"] = np.full(n, np.nan)
        scores["gradnorm"] = np.full(n, np.nan)
    details: dict[str, Any] = {"data": kind, "n_forget": n_f, "n_holdout": n_h}
    reasons = {}
    if ctx.inputs.reference_model is not None:
        _reference_attack(ctx, ctx.inputs.reference_model, forget, holdout, details)
    else:
        reasons["mia_reference_auc"] = "no reference model (--reference-model)"
    if kind == "qa" and opts.gradnorm_samples > 0:
        _gradnorm_attack(session, forget, holdout, details)
    elif kind in ("text", "windows"):
        details["gradnorm"] = "not computed on passages (QA sets only)"
        reasons["mia_gradnorm_auc"] = details["gradnorm"]
    aucs = {name: membership_auc(forget[name], holdout[name]) for name in ATTACKS}
    details["auc"] = aucs
    details["k"] = opts.min_k
    if ctx.reference is not None and ctx.reference.values.get("mia_auc"):
        details["auc_retain"] = ctx.reference.values["mia_auc"]
    metrics = {f"mia_{name}_auc": aucs[name] for name in ATTACKS}
    items_f: list[Any] = data.qa["forget"] if kind == "qa" else list(range(n_f))
    items_h: list[Any] = data.qa["holdout"] if kind == "qa" else list(range(n_h))
    rows = sample_rows("forget", items_f, **{a: forget[a].tolist() for a in ATTACKS})
    rows += sample_rows("holdout", items_h, **{a: holdout[a].tolist() for a in ATTACKS})
    return FamilyResult(metrics, details, rows, reasons)


def reference_from_model(session: ModelSession) -> dict[str, Any]:
    if session.data.membership_kind() is None:
        return {"mia_auc": {}}
    forget, holdout = cheap_attack_scores(session, "forget"), cheap_attack_scores(session, "holdout")
    return {"mia_auc": {name: membership_auc(forget[name], holdout[name]) for name in CHEAP_ATTACKS}}


def reference_from_results(root: Path, data: EvalData) -> dict[str, Any] | None:
    path = root / "summary.json"
    if not path.is_file():
        return None
    aucs = (EvalSummary.read(path).details.get("mia") or {}).get("auc")
    return {"mia_auc": dict(aucs)} if aucs else None


def supports(inputs: EvalInputs) -> bool:
    return inputs.data.membership_kind() is not None


def cache_inputs(inputs: EvalInputs) -> Any:
    return model_hash(inputs.reference_model) if inputs.reference_model is not None else None


register_family(
    "mia",
    run,
    ids=IDS,
    supports=supports,
    description="membership inference AUCs, forget (members) vs holdout: LOSS, zlib, Min-K%, Min-K%++, ...",
    headline=("mia_loss_auc",),
    retain=RetainHooks(reference_from_model, reference_from_results),
    cache_inputs=cache_inputs,
    order=30,
)
