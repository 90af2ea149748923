""" "I don't know" refusals: the y_idk answers of IdkDPO, IdkNLL, FLAT and Chen et al.

``idk_answers.txt`` holds one refusal per line (blank lines and ``#`` comments ignored):
answers to questions about a person. ``idk_texts.txt`` holds refusals to go on with a text,
which follow the prompt of a text window (``unmem.data.windows``) where a question's
refusal would make no sense. Both ship as package data, read through importlib.resources.
"""

from __future__ import annotations

import functools
from importlib import resources

REFUSAL_FILES = {"qa": "idk_answers.txt", "text": "idk_texts.txt"}


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
