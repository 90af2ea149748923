"""Utility: what the model can still do.

Perplexity on general text; rep-n / distinct-n / diversity of greedy continuations of
general-text prefixes; zero-shot multiple-choice accuracy (acc and acc_norm) on the
built-in NLU items. Formulas: ``unmem.metrics.generation``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unmem.data.collate import PromptFormat
from unmem.evaluation.registry import EvalInputs, FamilyContext, FamilyResult, register_family
from unmem.evaluation.session import ModelSession, num, sample_rows
from unmem.metrics import generation as gen
from unmem.metrics import scoring

IDS = (
    "general_ppl",
    *(f"gen_rep_{n}" for n in (2, 3, 4)),
    *(f"gen_distinct_{n}" for n in (2, 3, 4)),
    "gen_diversity",
    "nlu_acc",
    "nlu_acc_norm",
)


def _general(session: ModelSession, metrics: dict[str, float | None], result: FamilyResult) -> None:
    data, opts = session.data, session.opts
    scores = session.text_scores("general", data.general)
    ppl = gen.perplexity([-s.logps for s in scores])
    metrics["general_ppl"] = num(ppl.value)
    prefixes = [" ".join(t.split()[: opts.general_prefix_words]) for t in data.general]
    gens = scoring.greedy_generate(
        session.model,
        session.tokenizer,
        prefixes,
        max_new_tokens=opts.general_max_new_tokens,
        batch_size=session.batch_size,
    )
    columns: dict[str, list[Any]] = {"ppl": ppl.per_sample or []}
    for n in (2, 3, 4):
        rep = gen.rep_n(gens, n)
        dist = gen.distinct_n(gens, n)
        metrics[f"gen_rep_{n}"] = num(rep.value)
        metrics[f"gen_distinct_{n}"] = num(dist.value)
        columns[f"rep_{n}"] = rep.per_sample or []
    metrics["gen_diversity"] = num(gen.diversity(gens).value)
    result.rows += sample_rows("general", data.general, prefix=prefixes, generation=gens, **columns)
    result.details["general_tokens"] = ppl.extra["n_tokens"]


def _nlu(session: ModelSession, metrics: dict[str, float | None], result: FamilyResult) -> None:
    items = session.data.nlu
    fmt = PromptFormat(template="{question}")  # zero-shot continuation, as lm-eval scores it
    groups = scoring.grouped_answer_scores(
        session.model,
        session.tokenizer,
        [item["question"] for item in items],
        [list(item["choices"]) for item in items],
        fmt,
        batch_size=session.batch_size,
        add_eos=False,
    )
    logps = [[s.logp_sum for s in group] for group in groups]
    lengths = [[len(fmt.answer(c).encode("utf-8")) for c in item["choices"]] for item in items]
    acc = gen.multiple_choice_accuracy(logps, [int(item["answer"]) for item in items], lengths)
    metrics["nlu_acc"] = num(acc.value)
    metrics["nlu_acc_norm"] = num(acc.extra["acc_norm"])
    result.rows += sample_rows(
        "nlu",
        items,
        kind=[item.get("kind") for item in items],
        acc=acc.per_sample or [],
        acc_norm=acc.extra["acc_norm_per_sample"],
        pred=[int(np.argmax(lp)) for lp in logps],
    )
    result.details["nlu_items"] = len(items)


def run(ctx: FamilyContext) -> FamilyResult:
    metrics: dict[str, float | None] = dict.fromkeys(IDS)
    result = FamilyResult(metrics)
    if ctx.session.data.general:
        _general(ctx.session, metrics, result)
    else:
        result.reasons["general_ppl"] = "the data has no general text (general_eval)"
    if ctx.session.data.nlu:
        _nlu(ctx.session, metrics, result)
    return result


def supports(inputs: EvalInputs) -> bool:
    return bool(inputs.data.general or inputs.data.nlu)


register_family(
    "utility",
    run,
    ids=IDS,
    supports=supports,
    description="perplexity and repetition on general text, zero-shot multiple-choice accuracy",
    headline=("general_ppl", "nlu_acc"),
    order=50,
)
