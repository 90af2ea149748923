"""The model store on disk: versions, the ledger, and the commit that adds an entry.

Layout of ``STORE/`` (docs/requests.md)::

    store.json          format, id, and the head: number and hash of the newest ledger entry
    ledger.jsonl        the hash-chained ledger (unmem.store.ledger)
    versions/v0000/     version 0 (absent when the source is referenced, not copied)
    versions/v0001/ ... one per honoured request (unmem.store.versions)
    requests/0001-ID/   receipt.json, receipt.md and the request's evaluation and training summaries
    work/ID/            a request in progress: its data, run and evaluations (removed when done)
    pending.json        only while a commit is under way

A commit (``Store.commit``) first writes ``pending.json`` naming the entry and the folders
it adds, then renames the version and request folders into place, rewrites the ledger, then
``store.json``, then removes ``pending.json``. The ledger is the commit point: a process
killed before it leaves the store at its previous version, and the next command undoes the
renamed folders; killed after it, the next command finishes the head. ``STORE.lock`` (an
flock, ``unmem.io.exclusive_lock``) keeps a second writer out.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from unmem.errors import UnmemError
from unmem.io import exclusive_lock, read_json, write_json
from unmem.store.ledger import GENESIS, Problem, check_chain, read_entries, seal, write_entries
from unmem.store.versions import VERSION_FILE, Version, digest, digest_difference

STORE_FORMAT = "unmem-store"
FORMAT_VERSION = 1
STAGING = ".staging"


def version_name(number: int) -> str:
    return f"v{number:04d}"


def parse_version(text: str | int) -> int:
    """'3', 'v3' or 'v0003' -> 3."""
    raw = str(text).strip().lower().removeprefix("v")
    if not raw.isdigit():
        raise UnmemError(
            f"version '{text}': expected a number such as 3 or v3 (`unmem store log` lists them)"
        )
    return int(raw)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Store:
    """A store directory; ``Store.open`` checks that it is one."""

    def __init__(self, root: Path, info: dict[str, Any]) -> None:
        self.root = root
        self.info = info

    # -- files ---------------------------------------------------------------------------------

    @property
    def ledger_path(self) -> Path:
        return self.root / "ledger.jsonl"

    @property
    def pending_path(self) -> Path:
        return self.root / "pending.json"

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    @property
    def requests_dir(self) -> Path:
        return self.root / "requests"

    def work_dir(self, request_id: str) -> Path:
        return self.root / "work" / request_id

    def request_dir(self, entry: dict[str, Any]) -> Path:
        return self.requests_dir / f"{entry['seq']:04d}-{entry['request']['id']}"

    @staticmethod
    def info_path(root: Path) -> Path:
        return root / "store.json"

    @classmethod
    def open(cls, path: str | Path) -> Store:
        root = Path(path)
        info_path = cls.info_path(root)
        if not info_path.is_file():
            raise UnmemError(f"{root}: not a model store (no store.json); start one with `unmem store init`")
        info = read_json(info_path)
        if not isinstance(info, dict) or info.get("format") != STORE_FORMAT:
            raise UnmemError(f"{info_path}: not an unmem store file (format {info.get('format')!r})")
        if info.get("format_version") != FORMAT_VERSION:
            raise UnmemError(
                f"{info_path}: store format {info.get('format_version')!r}; this unmem reads {FORMAT_VERSION}"
            )
        return cls(root, info)

    @classmethod
    def create(cls, root: Path) -> Store:
        info = {
            "format": STORE_FORMAT,
            "format_version": FORMAT_VERSION,
            "id": uuid.uuid4().hex,
            "created": now(),
            "head": {"seq": -1, "hash": GENESIS},
        }
        write_json(cls.info_path(root), info)
        return cls(root, info)

    @contextmanager
    def locked(self) -> Iterator[Store]:
        """Hold ``STORE.lock`` (a second writer fails at once, naming this one) and finish or undo a
        commit that a killed process left half done."""
        with exclusive_lock(self.root):
            self.recover()
            yield self

    # -- the ledger ----------------------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        return read_entries(self.ledger_path) if self.ledger_path.is_file() else []

    def chain_problem(self, entries: list[dict[str, Any]]) -> Problem | None:
        """A broken link, or a ledger that is not what ``store.json`` says its newest entry is."""
        problem = check_chain(entries)
        if problem is not None:
            return problem
        head = self.info.get("head") or {}
        last = entries[-1] if entries else {"seq": -1, "hash": GENESIS}
        if head.get("seq") == last["seq"] and head.get("hash") == last["hash"]:
            return None
        if isinstance(head.get("seq"), int) and head["seq"] > last["seq"]:
            return Problem(
                last["seq"] + 1,
                f"missing: store.json records {head['seq'] + 1} entries, the ledger holds {len(entries)} "
                "(the ledger was cut short)",
            )
        if isinstance(head.get("seq"), int) and 0 <= head["seq"] < len(entries):
            if entries[head["seq"]]["hash"] != head.get("hash"):
                return Problem(
                    head["seq"], "its hash differs from the one store.json recorded (re-hashed by hand)"
                )
            return Problem(head["seq"] + 1, "store.json does not know this entry (appended by hand)")
        return Problem(0, f"store.json's head {head!r} matches no entry")

    def checked_entries(self) -> list[dict[str, Any]]:
        entries = self.entries()
        problem = self.chain_problem(entries)
        if problem is not None:
            raise UnmemError(f"{self.ledger_path}: {problem}; refusing to use this store")
        return entries

    # -- versions ------------------------------------------------------------------------------

    def versions(self, entries: list[dict[str, Any]]) -> dict[int, Version]:
        """Every version the ledger made, by number."""
        found: dict[int, Version] = {}
        for entry in entries:
            made = entry.get("made")
            if not made:
                continue
            number = made["version"]
            referenced = bool(made.get("referenced"))
            path = Path(made["path"]) if referenced else self.versions_dir / version_name(number)
            found[number] = Version(
                number=number,
                kind=made["kind"],
                path=path,
                entry=entry["seq"],
                digest=made["digest"],
                parent=made.get("parent"),
                base=made.get("base"),
                components=list(made.get("components") or []),
                request=made.get("request"),
                referenced=referenced,
            )
        return found

    @staticmethod
    def current(entries: list[dict[str, Any]]) -> int:
        if not entries:
            raise UnmemError("the store's ledger is empty (not initialised)")
        return int(entries[-1]["version_after"])

    def lineage(self, number: int, versions: dict[int, Version]) -> list[Version]:
        """The versions ``number`` loads from: itself, what it sits on, and the layers it fuses."""
        seen: dict[int, Version] = {}
        todo = [number]
        while todo:
            current = versions[todo.pop()]
            if current.number in seen:
                continue
            seen[current.number] = current
            todo += [n for n in (current.base, *current.components) if n is not None]
        return sorted(seen.values(), key=lambda v: v.number)

    def version_problem(self, version: Version) -> str | None:
        """Why a version's files are not those its ledger entry recorded (None: they are)."""
        if not version.path.is_dir():
            return f"version {version.number}: {version.path} is missing"
        found = digest(version.path, version.referenced)
        difference = digest_difference(version.digest, found)
        if difference is None:
            return None
        where = "the referenced source" if version.referenced else "version"
        return f"{where} {version.number} ({version.path}): {difference}"

    def check_lineage(self, number: int, versions: dict[int, Version]) -> None:
        """Refuse a version (or one it loads from) whose files no longer match the ledger."""
        for version in self.lineage(number, versions):
            problem = self.version_problem(version)
            if problem is not None:
                raise UnmemError(
                    f"{problem} (made by ledger entry {version.entry}); refusing to add a version on weights "
                    "the ledger does not vouch for: restore them, or `unmem store rollback` to a version that verifies"
                )

    def stage_dir(self, number: int) -> Path:
        """Where a version is built before its commit (load paths relative to ``versions/`` hold)."""
        return self.versions_dir / f".{version_name(number)}{STAGING}"

    # -- commits -------------------------------------------------------------------------------

    def commit(
        self,
        body: dict[str, Any],
        version_stage: Path | None = None,
        write_request: Callable[[dict[str, Any], Path], None] | None = None,
    ) -> dict[str, Any]:
        """Append ``body`` to the ledger, publishing the staged version and the request's folder
        with it; returns the sealed entry. Call inside ``locked()``."""
        entries = self.checked_entries()
        entry = seal(body, entries)
        moves: list[tuple[str, str]] = []
        if version_stage is not None:
            moves.append(
                (str(version_stage), str(self.versions_dir / version_name(entry["made"]["version"])))
            )
        if write_request is not None:
            final = self.request_dir(entry)
            stage = final.with_name(f".{final.name}{STAGING}")
            shutil.rmtree(stage, ignore_errors=True)
            stage.mkdir(parents=True)
            write_request(entry, stage)
            moves.append((str(stage), str(final)))
        write_json(self.pending_path, {"entry": entry, "moves": moves})
        for _, target in moves:
            if Path(target).exists():  # recover() removes what an interrupted commit left
                raise UnmemError(
                    f"{target}: exists, and no ledger entry made it; `unmem store verify {self.root}` says more"
                )
        for source, target in moves:
            os.replace(source, target)
        write_entries(self.ledger_path, [*entries, entry])
        self._set_head(entry)
        self.pending_path.unlink()
        return entry

    def _set_head(self, entry: dict[str, Any] | None) -> None:
        self.info["head"] = (
            {"seq": entry["seq"], "hash": entry["hash"]} if entry else {"seq": -1, "hash": GENESIS}
        )
        write_json(self.info_path(self.root), self.info)

    def recover(self) -> str | None:
        """Finish or undo a commit a killed process left (``pending.json``); returns what was done."""
        for leftover in (*self.versions_dir.glob(f".*{STAGING}"), *self.requests_dir.glob(f".*{STAGING}")):
            shutil.rmtree(leftover, ignore_errors=True)
        if not self.pending_path.is_file():
            return None
        pending = read_json(self.pending_path)
        entry = pending["entry"]
        entries = self.entries()
        last = entries[-1] if entries else None
        if last is not None and last["hash"] == entry["hash"]:
            self._set_head(entry)
            done = f"finished the commit of ledger entry {entry['seq']} that an interrupted process left"
        elif (last["hash"] if last else GENESIS) == entry["prev"] and self.chain_problem(entries) is None:
            for _, target in pending["moves"]:
                shutil.rmtree(target, ignore_errors=True)
            done = (
                f"undid the unfinished commit of ledger entry {entry['seq']} (the store stays at its version)"
            )
        else:
            raise UnmemError(
                f"{self.pending_path}: names ledger entry {entry['seq']}, which neither follows nor ends the "
                "ledger; the store was changed by hand while a commit was pending"
            )
        self.pending_path.unlink()
        return done

    def make_version_record(
        self, version: Version, stage: Path, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Write ``store_version.json`` into the staged folder and return the ledger's ``made`` field."""
        write_json(stage / VERSION_FILE, version.describe())
        return {**version.describe(), "digest": digest(stage), **(extra or {})}
