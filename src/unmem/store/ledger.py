"""The store's ledger: append-only JSON Lines, every entry hash-chained to the one before it.

An entry is a JSON object. Its ``hash`` is the SHA-256 of the canonical JSON of every other
field, ``prev`` (the previous entry's hash; 64 zeros for the first) included, so changing
one byte of an entry changes its hash, and re-computing that hash to hide the change breaks
the next entry's ``prev``. Canonical JSON: keys sorted, no spaces, UTF-8, floats as Python
writes them (the shortest text that reads back as the same number). docs/requests.md has
the fields of each kind of entry.

The file is rewritten whole (``unmem.io.write_text_atomic``) to append, so a crash leaves
the old ledger or the new one, never half a line. What the chain alone cannot show (the
last entries cut off, or the last entry edited and re-hashed) the store's ``store.json``
head and the receipts, which hold the hash of their entry, do (``unmem.store.store``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unmem.errors import UnmemError
from unmem.io import json_safe, read_text, write_text_atomic

GENESIS = "0" * 64  # the ``prev`` of the first entry
KINDS = ("init", "request", "rollback")


def canonical(obj: Any) -> bytes:
    """The bytes an entry's hash is computed over."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the entry without its own ``hash`` (``prev`` included)."""
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def seal(body: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
    """``body`` as the next entry after ``entries``: numbered, chained and hashed."""
    entry = json_safe({"seq": len(entries), **body, "prev": entries[-1]["hash"] if entries else GENESIS})
    entry["hash"] = entry_hash(entry)
    return entry


@dataclass
class Problem:
    """The first place the ledger does not hold: which entry (``seq``, 0-based; its line is seq + 1)."""

    seq: int
    message: str

    def __str__(self) -> str:
        return f"ledger entry {self.seq} (line {self.seq + 1}): {self.message}"


def read_entries(path: Path) -> list[dict[str, Any]]:
    """Every entry; a line that is not a JSON object is an error naming it (a cut or edited file)."""
    entries = []
    for lineno, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UnmemError(
                f"{path}:{lineno}: ledger entry {lineno - 1} is not valid JSON ({exc.msg}): the ledger was "
                "cut or edited by hand; `unmem store verify` and your receipts say which versions to trust"
            ) from None
        if not isinstance(entry, dict):
            raise UnmemError(f"{path}:{lineno}: ledger entry {lineno - 1} is not a JSON object")
        entries.append(entry)
    return entries


def check_chain(entries: list[dict[str, Any]]) -> Problem | None:
    """The first entry whose number, link or hash does not match; None when the chain holds."""
    prev = GENESIS
    for seq, entry in enumerate(entries):
        if entry.get("seq") != seq:
            return Problem(
                seq, f"numbered {entry.get('seq')!r}, expected {seq} (an entry was removed or moved)"
            )
        if entry.get("prev") != prev:
            return Problem(
                seq, f"prev {str(entry.get('prev'))[:16]}… does not match entry {seq - 1}'s hash {prev[:16]}…"
            )
        computed = entry_hash(entry)
        if entry.get("hash") != computed:
            return Problem(
                seq,
                f"its contents do not match its hash (recorded {str(entry.get('hash'))[:16]}…, "
                f"computed {computed[:16]}…): edited after it was written",
            )
        if entry.get("kind") not in KINDS:
            return Problem(seq, f"unknown kind {entry.get('kind')!r}; known: {', '.join(KINDS)}")
        prev = computed
    return None


def write_entries(path: Path, entries: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(canonical(entry).decode() + "\n" for entry in entries))
