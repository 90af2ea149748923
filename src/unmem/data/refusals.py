""" "I don't know" refusals: the y_idk answers of IdkDPO, IdkNLL, FLAT and Chen et al.

``idk_answers.txt`` holds one refusal per line (blank lines and ``#`` comments ignored):
answers to questions about a person. ``idk_spans.txt`` holds short phrases that stand in for
a fact inside an answer ("something I don't know"): ``refusal_record`` with ``style="span"``
keeps the answer and replaces only its sensitive spans with one, so the refusal starts as the
answer does. ``idk_texts.txt`` holds refusals to go on with a text, which follow the prompt of
a text window (``unmem.data.windows``) where a question's refusal would make no sense. All
ship as package data, read through importlib.resources.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import resources
from typing import Any

REFUSAL_FILES = {"qa": "idk_answers.txt", "span": "idk_spans.txt", "text": "idk_texts.txt"}
REFUSAL_STYLES = ("whole", "span")


@functools.cache
def _idk_answers(kind: str) -> tuple[str, ...]:
    if kind not in REFUSAL_FILES:
        raise ValueError(f"unknown refusal kind {kind!r}; known: {', '.join(REFUSAL_FILES)}")
    text = resources.files("unmem.data").joinpath(REFUSAL_FILES[kind]).read_text(encoding="utf-8")
    return tuple(
        line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )


def load_idk_answers(kind: str = "qa") -> list[str]:
    """The shipped refusals of ``kind`` ("qa": to questions; "text": to continue a text), in file
    order (a fresh list each call)."""
    return list(_idk_answers(kind))


def refusal_record(
    record: dict[str, Any], choose: Callable[[list[str]], str], style: str = "whole"
) -> dict[str, Any]:
    """``record`` answered with a refusal that ``choose`` picks from the shipped ones.

    A QA pair: ``style="whole"`` answers its question with a refusal ("I'm not sure about
    that; ..."); ``style="span"`` keeps the answer and replaces each of its ``sensitive`` spans
    with a refusal phrase ("Nelia Hartek was born in something I don't know."), so the refusal
    begins as the model's own answer does instead of teaching every question a new first word.
    A text window: its prompt followed by a refusal to go on with the text.
    """
    if "question" not in record:
        return {"prompt": record["prompt"], "gt": choose(load_idk_answers("text"))}
    if style == "span":
        answer = str(record["answer"])
        spans = [span for span in record.get("sensitive") or () if span and span in answer]
        if not spans:
            raise ValueError(
                f"refusal='span' replaces the sensitive spans of the answer, and {answer!r} has none "
                "(give the record a `sensitive` field, or use refusal='whole')"
            )
        filler = choose(load_idk_answers("span"))
        for span in spans:
            answer = answer.replace(span, filler)
        return {"question": record["question"], "answer": answer}
    if style != "whole":
        raise ValueError(f"unknown refusal style {style!r}; known: {', '.join(REFUSAL_STYLES)}")
    return {"question": record["question"], "answer": choose(load_idk_answers("qa"))}
