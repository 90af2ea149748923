"""Long texts as windows: a prompt and its true continuation, as MUSE's VerbMem scores them.

MUSE (Shi et al. 2024) measures verbatim memorisation by prompting the model with a
passage of the forget text and comparing its greedy continuation with the text that
really follows (``prompt`` / ``gt``, the continuation scored up to 128 tokens). A text
given whole (a license, a chapter) is cut here into such windows:

- the text's words (runs of non-whitespace) after its first ``prompt_words`` are split into
  k = ceil((n − P) / C) continuations of near-equal length, at most ``continuation_words``
  (C) each, so every word after the first P is scored exactly once and no window is a stub;
- each continuation's prompt is the P words before it (the first window's: the text's first P);
- a text of at most P words is one window: its first half is the prompt, the rest the
  continuation (a one-word text has no continuation and gives no window).

Windows are cut at whitespace, not at tokens, so the same windows serve every model and
tokenizer (as MUSE's published prompt/gt strings do); the evaluation caps the scored
continuation at ``verbmem_max_new_tokens`` tokens of the model's tokenizer, as MUSE cuts
its ``gt``. The defaults (32 + 96 words, ~45 + ~130 SmolLM2 tokens of license text) keep
a window inside MUSE's 128-token continuation budget. The whitespace between prompt and
continuation stays at the start of the continuation, so prompt + continuation is the text
exactly; ``continuation_text`` restores it for files that dropped it.

Inputs (``read_windows``): a ``.txt`` file (one text), or ``.jsonl`` / ``.json`` /
``.parquet`` records, each with a ``text`` (a text, windowed here) or a ``prompt`` and a
``gt`` (a window as given, as in MUSE's ``verbmem/forget.json``; Parquet ``binary`` columns are
read as UTF-8); a ``.json`` list of plain
strings holds texts (as MUSE's PrivLeak files). Every window
records where it came from: ``source`` (the file), ``line`` (its record, for record files),
``window`` (its number within the text).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from unmem.errors import UnmemError, input_error
from unmem.io import read_text, read_values

PROMPT_WORDS = 32
CONTINUATION_WORDS = 96
TEXT_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
_WORD = re.compile(r"\S+")


def cut_windows(
    text: str, prompt_words: int = PROMPT_WORDS, continuation_words: int = CONTINUATION_WORDS
) -> list[tuple[str, str]]:
    """(prompt, continuation) pairs of one text; see the module docstring for the rule."""
    if prompt_words < 1 or continuation_words < 1:
        raise ValueError(f"window lengths must be >= 1 word, got {prompt_words} + {continuation_words}")
    words = [match.span() for match in _WORD.finditer(text)]
    n = len(words)
    if n < 2:
        return []
    if n <= prompt_words:
        cuts = [max(1, n // 2), n]
    else:
        k = math.ceil((n - prompt_words) / continuation_words)
        cuts = [prompt_words + round(i * (n - prompt_words) / k) for i in range(k + 1)]
    windows = []
    for begin, end in itertools.pairwise(cuts):
        first = words[max(0, begin - prompt_words)][0] if n > prompt_words else words[0][0]
        split = words[begin - 1][1]  # the end of the prompt's last word: whitespace goes to the continuation
        windows.append((text[first:split], text[split : words[end - 1][1]]))
    return windows


def continuation_text(record: dict[str, Any]) -> str:
    """The continuation as it follows the prompt in the text.

    Windows cut here keep the whitespace between the two. MUSE's published files and the
    world's bios split at a space and dropped it; when prompt and continuation meet without
    whitespace and the continuation starts with a letter or digit, the space is put back, so
    the first continuation token is the one the text has (" Dumbledore", not "Dumbledore").
    """
    prompt, gt = str(record["prompt"]), str(record["gt"])
    if prompt and gt and not prompt[-1].isspace() and not gt[0].isspace() and gt[0].isalnum():
        return " " + gt
    return gt


def _text_windows(
    text: str, source: Path, line: int | None, prompt_words: int, continuation_words: int, doc: Any = None
) -> list[dict[str, Any]]:
    return [
        {"prompt": prompt, "gt": gt, "source": str(source), "line": line, "window": number, "doc": doc}
        for number, (prompt, gt) in enumerate(cut_windows(text, prompt_words, continuation_words))
    ]


def _decoded(value: dict[str, Any], path: Path, line: int) -> dict[str, Any]:
    """The record with Parquet ``binary`` columns read as UTF-8, the layout's only text encoding."""
    out = dict(value)
    for name in ("text", "prompt", "gt"):
        if isinstance(out.get(name), bytes):
            try:
                out[name] = out[name].decode("utf-8")
            except UnicodeDecodeError:
                raise input_error(path, "not UTF-8", line=line, field=name) from None
    return out


def _record_windows(path: Path, prompt_words: int, continuation_words: int) -> Iterable[dict[str, Any]]:
    for line, value in read_values(path):
        if isinstance(value, str):
            yield from _text_windows(value, path, line, prompt_words, continuation_words)
            continue
        if not isinstance(value, dict):
            raise input_error(
                path, f"expected a JSON object or a string, got {type(value).__name__}", line=line
            )
        value = _decoded(value, path, line)
        if "prompt" in value or "gt" in value:
            for name in ("prompt", "gt"):
                if not isinstance(value.get(name), str) or not value[name]:
                    raise input_error(path, "missing, empty or not a string", line=line, field=name)
            yield {
                "prompt": value["prompt"],
                "gt": value["gt"],
                "source": str(path),
                "line": line,
                "window": 0,
            }
        elif "text" in value:
            if not isinstance(value["text"], str):
                raise input_error(
                    path, f"expected a string, got {type(value['text']).__name__}", line=line, field="text"
                )
            doc = value.get("id")
            yield from _text_windows(value["text"], path, line, prompt_words, continuation_words, doc)
        else:
            raise input_error(path, "expected a `text` field, or `prompt` and `gt`", line=line)


def read_windows(
    path: str | Path, prompt_words: int = PROMPT_WORDS, continuation_words: int = CONTINUATION_WORDS
) -> list[dict[str, Any]]:
    """Every window of a text file or a record file (module docstring).

    A file with no text to window (empty, or only one-word texts) is an error naming it.
    """
    path = Path(path)
    if path.suffix not in TEXT_SUFFIXES:
        raise input_error(path, f"unknown text file type; expected one of {', '.join(TEXT_SUFFIXES)}")
    if path.suffix == ".txt":
        windows = _text_windows(read_text(path), path, None, prompt_words, continuation_words)
    else:
        windows = list(_record_windows(path, prompt_words, continuation_words))
    if not windows:
        raise input_error(path, "no text to score: the file is empty or its texts are single words")
    return windows


def is_text_file(path: str | Path) -> bool:
    """Whether ``path`` holds texts rather than QA pairs: a ``.txt`` file, or records whose first
    one has a ``text`` or ``prompt`` field (and no ``question``)."""
    path = Path(path)
    if path.suffix == ".txt":
        return True
    values = read_values(path)
    first = values[0][1] if values else None
    if isinstance(first, str):
        return True
    return isinstance(first, dict) and "question" not in first and ("text" in first or "prompt" in first)


def window_error(record: dict[str, Any], problem: str) -> UnmemError:
    """An error naming a window's file, record and number."""
    where = f"window {int(record.get('window') or 0) + 1}"
    return input_error(
        record.get("source") or "text windows",
        f"{where} {problem}; split the text into shorter windows (prompt/gt records)",
        line=record.get("line"),
    )


def check_windows_fit(
    records: Iterable[dict[str, Any]], lengths: Iterable[int], limit: int, what: str
) -> None:
    """Fail on the first window whose tokens (prompt + continuation) exceed ``limit``: training on it
    would run the model past what it can read."""
    for record, length in zip(records, lengths, strict=True):
        if length > limit:
            raise window_error(
                record, f"has {length} tokens (prompt + continuation), more than {what} ({limit})"
            )
