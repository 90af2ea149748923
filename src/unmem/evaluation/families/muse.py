"""MUSE (Shi et al. 2024): VerbMem, KnowMem and PrivLeak.

- VerbMem: ROUGE-L F1 of greedy continuations of forget prefixes (gt cut to
  ``verbmem_max_new_tokens`` tokens, as MUSE does); ``verbmem_retain`` / ``verbmem_holdout``
  the same on the retain and holdout windows when the data has them (the ``texts`` layout;
  the world's holdout bios): a forgotten text's VerbMem sits at the holdout's.
- KnowMem forget / retain: ROUGE-L F1 of answers under a ``knowmem_shots``-shot prompt;
  shots come from the retain side, never from the scored sets.
- PrivLeak: Min-40% MUSE AUC on forget vs holdout passages, relative to the retain
  model's; QA forget vs holdout when there are no passages, as open-unlearning does for TOFU.

Formulas: ``unmem.metrics.muse`` and ``unmem.metrics.mia``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unmem.data.benchmarks import EvalData
from unmem.evaluation.reference import nan_list, per_sample_column
from unmem.evaluation.registry import EvalInputs, FamilyContext, FamilyResult, RetainHooks, register_family
from unmem.evaluation.session import ModelSession, finite, num, sample_rows
from unmem.metrics import mia, muse, scoring

IDS = (
    "verbmem_forget",
    "verbmem_retain",
    "verbmem_holdout",
    "knowmem_forget",
    "knowmem_retain",
    "privleak",
    "privleak_auc",
)


def muse_auc(forget: Sequence[float], holdout: Sequence[float]) -> float | None:
    f, h = finite(forget), finite(holdout)
    if f.size == 0 or h.size == 0:
        return None
    return mia.muse_auc(f, h)


def _verbmem(session: ModelSession, metrics: dict[str, float | None], rows: list[dict[str, Any]]) -> None:
    tok, cap = session.tokenizer, session.opts.verbmem_max_new_tokens
    for name in ("forget", "retain", "holdout"):
        verb = session.data.verbmem.get(name) or []
        if not verb:
            continue
        # MUSE cuts the true continuation to the generation budget before ROUGE.
        gts = [tok.decode(tok(r["gt"], add_special_tokens=False)["input_ids"][:cap]) for r in verb]
        # Greedy from [bos] prompt, at most `cap` new tokens (shared with the extraction family).
        gens = tok.batch_decode(session.window_continuations(name), skip_special_tokens=True)
        result = muse.verbmem(gens, gts)
        metrics[f"verbmem_{name}"] = num(result.value)
        rows += sample_rows(f"verbmem_{name}", verb, rouge_f1=result.per_sample or [], generation=gens)


def _knowmem(session: ModelSession, metrics: dict[str, float | None], result: FamilyResult) -> None:
    opts = session.opts
    shots = [(r["question"], r["answer"]) for r in session.data.knowmem_shots[: opts.knowmem_shots]]
    result.details["knowmem_shots"] = len(shots)
    for side in ("forget", "retain"):
        records = session.data.knowmem.get(side) or []
        if not records:
            continue
        prompts = [muse.knowmem_prompt(r["question"], shots) for r in records]
        gens = scoring.greedy_generate(
            session.model,
            session.tokenizer,
            prompts,
            max_new_tokens=opts.knowmem_max_new_tokens,
            batch_size=session.batch_size,
        )
        scored = muse.knowmem(gens, [r["answer"] for r in records])
        metrics[f"knowmem_{side}"] = num(scored.value)
        cut = [muse.truncate_at_stops(g).strip() for g in gens]
        result.rows += sample_rows(
            f"knowmem_{side}", records, rouge_f1=scored.per_sample or [], generation=cut
        )


def _privleak(ctx: FamilyContext, metrics: dict[str, float | None], result: FamilyResult) -> None:
    data = ctx.session.data
    own_f, own_h = ctx.session.privleak_scores("forget"), ctx.session.privleak_scores("holdout")
    auc = muse_auc(own_f, own_h)
    metrics["privleak_auc"] = auc
    kind = "passages" if data.privleak.get("forget") else data.membership_kind()
    result.details["privleak_data"] = kind
    sets = {"qa": data.qa, "windows": data.verbmem}.get(str(kind))
    forget_items: list[Any] = sets["forget"] if sets else list(own_f)
    holdout_items: list[Any] = sets["holdout"] if sets else list(own_h)
    result.rows += sample_rows("privleak_forget", forget_items, min_k_40=own_f.tolist())
    result.rows += sample_rows("privleak_holdout", holdout_items, min_k_40=own_h.tolist())
    values = ctx.reference.values if ctx.reference else {}
    ret_f, ret_h = nan_list(values.get("privleak_forget")), nan_list(values.get("privleak_holdout"))
    if ret_f and ret_h:
        ret_auc = muse_auc(ret_f, ret_h)
    elif ctx.session.opts.privleak_retain_auc is not None:
        ret_auc = ctx.session.opts.privleak_retain_auc
        result.details["privleak_auc_retain_from"] = "option privleak_retain_auc"
    else:
        result.reasons["privleak"] = (
            "no retain model to compare with (--retain-model, --retain-results, "
            "or the retrain model's AUC as option privleak_retain_auc)"
        )
        return
    result.details["privleak_auc_retain"] = ret_auc
    if auc is not None and ret_auc is not None:
        metrics["privleak"] = num(mia.privleak(auc, ret_auc))


def run(ctx: FamilyContext) -> FamilyResult:
    metrics: dict[str, float | None] = dict.fromkeys(IDS)
    result = FamilyResult(metrics)
    _verbmem(ctx.session, metrics, result.rows)
    _knowmem(ctx.session, metrics, result)
    if ctx.session.data.membership_kind() is not None:
        _privleak(ctx, metrics, result)
    return result


def reference_from_model(session: ModelSession) -> dict[str, Any]:
    if session.data.membership_kind() is None:
        return {"privleak_forget": None, "privleak_holdout": None}
    return {
        "privleak_forget": session.privleak_scores("forget").tolist(),
        "privleak_holdout": session.privleak_scores("holdout").tolist(),
    }


def reference_from_results(root: Path, data: EvalData) -> dict[str, Any] | None:
    path = root / "per_sample" / "muse.jsonl"
    forget = per_sample_column(path, "privleak_forget", "min_k_40")
    if forget is None:
        return None
    return {
        "privleak_forget": forget,
        "privleak_holdout": per_sample_column(path, "privleak_holdout", "min_k_40"),
    }


def supports(inputs: EvalInputs) -> bool:
    data = inputs.data
    return (
        bool(data.verbmem.get("forget") or data.knowmem.get("forget")) or data.membership_kind() is not None
    )


register_family(
    "muse",
    run,
    ids=IDS,
    supports=supports,
    description="MUSE: VerbMem, KnowMem (forget / retain) and PrivLeak against the retain model",
    headline=("verbmem_forget", "knowmem_forget", "knowmem_retain", "privleak"),
    retain=RetainHooks(reference_from_model, reference_from_results),
    order=20,
)
