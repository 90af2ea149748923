"""Relearning attacks: fine-tune a copy of the model briefly, then score it (Hu et al., "Jogging the
memory of unlearned LLMs through targeted relearning attacks", 2024; Lynch et al., "Eight methods
to evaluate robust unlearning in LLMs", 2024). Knowledge that was only suppressed comes back after
a few steps on related data; knowledge that is gone has to be learnt like a model that never saw
it would learn it, which the same fine-tune of the retain model measures (robustness R).

Three data sources, each one epoch (``relearn_epochs``) at ``relearn_lr``, constant rate, batch
``relearn_batch_size``, no weight decay, with unmem's fine-tuning loop (``unmem.train.finetune``):

- ``relearn_forget``: every other forget question of each person (of the set, without an
  ``entity_id``), scored on the other half: the attacker knows some facts and wants the rest.
- ``relearn_retain``: the retain QA set, scored on the whole forget set (benign fine-tuning).
- ``relearn_related``: text about the forget people that states none of their QA facts,
  scored on the whole forget set. The world's private records (each forget person's phone,
  e-mail and address) are such text; a layout without them skips the attack.

The copy lives in memory only (nothing is written, so a killed audit leaves nothing behind);
the session's model is never touched.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from unmem.data.benchmarks import EvalData
from unmem.evaluation.attacks.base import Attacked, register_attack, with_sets
from unmem.evaluation.options import EvalOptions
from unmem.evaluation.session import ModelSession
from unmem.metrics.scoring import model_device


def forget_halves(records: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """(relearned, scored) indices: alternate records of each ``entity_id`` (records without one
    form one group), so every person has facts on both sides."""
    groups: dict[Any, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(record.get("entity_id"), []).append(i)
    relearned = sorted(i for members in groups.values() for i in members[0::2])
    scored = sorted(i for members in groups.values() for i in members[1::2])
    return relearned, scored


def relearn_copy(
    session: ModelSession, records: list[dict[str, Any]], desc: str
) -> tuple[Any, dict[str, Any]]:
    """A fine-tuned copy of the session's model and the run's cost; the session's model is unchanged."""
    # evaluation/ may import the training layer here only: an attack fine-tunes as `unmem finetune` does.
    from unmem.train.finetune import FinetuneConfig, finetune_in_memory

    opts = session.opts
    config = FinetuneConfig(
        lr=opts.relearn_lr,
        epochs=opts.relearn_epochs,
        batch_size=opts.relearn_batch_size,
        scheduler="constant",
        warmup_ratio=0.0,
        weight_decay=0.0,
        chat_template=session.fmt.chat,
        device=str(model_device(session.model)),
        seed=0,
    )
    model = copy.deepcopy(session.model)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    info = finetune_in_memory(model, session.tokenizer, records, config, desc)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    info |= {"lr": opts.relearn_lr, "epochs": opts.relearn_epochs, "batch_size": opts.relearn_batch_size}
    return model, info


def _relearn_forget(session: ModelSession) -> Attacked:
    forget = session.data.qa["forget"]
    relearned, scored = forget_halves(forget)
    model, info = relearn_copy(session, [forget[i] for i in relearned], "relearn_forget")
    data = with_sets(session.data, forget=[forget[i] for i in scored])
    return Attacked(model, data, scored, info=info | {"relearned_questions": len(relearned)})


def _relearn_from(source: Callable[[EvalData], list[dict[str, Any]]], desc: str) -> Callable:
    def apply(session: ModelSession) -> Attacked:
        model, info = relearn_copy(session, source(session.data), desc)
        forget = session.data.qa["forget"]
        return Attacked(model, session.data, list(range(len(forget))), info=info)

    return apply


def _related_text(data: EvalData) -> list[dict[str, Any]]:
    return [{"text": record["text"]} for record in data.private]


def _too_few_forget(data: EvalData, opts: EvalOptions) -> str | None:
    if len(data.qa.get("forget") or []) < 2:
        return "needs at least 2 forget questions (one to relearn, one to score)"
    return None


def _no_retain(data: EvalData, opts: EvalOptions) -> str | None:
    return None if data.qa.get("retain") else f"the {data.benchmark} layout has no retain QA to fine-tune on"


def _no_related(data: EvalData, opts: EvalOptions) -> str | None:
    if data.private:
        return None
    return (
        f"the {data.benchmark} layout has no text about the forget people besides their QA "
        "(the world's private records are such text)"
    )


register_attack(
    "relearn_forget",
    _relearn_forget,
    kind="relearn",
    description="fine-tune on every other forget question of each person, score the other half",
    missing=_too_few_forget,
)
register_attack(
    "relearn_retain",
    _relearn_from(lambda data: data.qa["retain"], "relearn_retain"),
    kind="relearn",
    description="fine-tune on the retain QA only (benign fine-tuning), score the forget set",
    missing=_no_retain,
)
register_attack(
    "relearn_related",
    _relearn_from(_related_text, "relearn_related"),
    kind="relearn",
    description="fine-tune on text about the forget people without their facts (private records)",
    missing=_no_related,
)
