"""``unmem store init | log | show | export | rollback | verify``: everything but a request."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unmem.errors import UnmemError
from unmem.io import atomic_dir, check_not_an_input, check_replaceable, read_json
from unmem.models import MODEL_CARD, resolve_model_dir
from unmem.store.receipt import receipt_problem
from unmem.store.store import Store, now, parse_version, version_name
from unmem.store.versions import VERSION_FILE, Version, digest


def init_store(model: str | Path, out: str | Path, *, reference: bool = False) -> Store:
    """A new store whose version 0 is ``model``: copied into it, or (``reference``) left where it is
    and pinned by the hash of its files. The source is never written."""
    from unmem.evaluation.cache import check_weights

    source = resolve_model_dir(model).resolve()
    if (source / MODEL_CARD).is_file():
        raise UnmemError(
            f"{source}: an adapter or method layers over another model; start a store from a plain model "
            "directory (`unmem store export` or a merged `unmem finetune` makes one)"
        )
    check_weights(source)
    root = check_not_an_input(out, {"model": source})
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UnmemError(f"--out {root}: exists and is not empty; a store starts in a new folder")
    with atomic_dir(root) as staging:
        store = Store.create(staging)
        store.versions_dir.mkdir()
        store.requests_dir.mkdir()
        version = Version(0, "full", source, entry=0, digest={}, request=None, referenced=reference)
        if reference:
            made = {**version.describe(), "digest": digest(source, referenced=True)}
            made |= {"referenced": True, "path": str(source)}
        else:
            stage = store.stage_dir(0)
            stage.mkdir()
            for path in sorted(source.iterdir()):
                if path.is_file():
                    shutil.copy2(path, stage / path.name)
            made = store.make_version_record(version, stage)
        body = {"kind": "init", "time": now(), "version_before": None, "version_after": 0, "made": made}
        body["source"] = {"path": str(source), "mode": "reference" if reference else "copy"}
        store.commit(body, None if reference else store.stage_dir(0))
    return Store.open(root)


def rollback(store_dir: str | Path, target: str | int) -> dict[str, Any]:
    """Make an earlier version current again; appended to the ledger, nothing is deleted."""
    store = Store.open(store_dir)
    number = parse_version(target)
    with store.locked():
        entries = store.checked_entries()
        versions = store.versions(entries)
        if number not in versions:
            raise UnmemError(
                f"{store.root}: no version {number}; versions: {', '.join(map(str, sorted(versions)))}"
            )
        current = Store.current(entries)
        if number == current:
            raise UnmemError(f"{store.root}: version {number} is already the current one")
        store.check_lineage(number, versions)
        body = {"kind": "rollback", "time": now(), "version_before": current, "version_after": number}
        return store.commit(body)


@dataclass
class VerifyReport:
    entries: int
    current: int
    head: str
    versions: int
    receipts: int
    notes: list[str] = field(default_factory=list)


def verify(store_dir: str | Path, receipts: list[str | Path] = ()) -> VerifyReport:
    """Recompute the chain and every version's hash; check the receipts in the store and those
    given. The first thing that does not match is an UnmemError naming its ledger entry."""
    store = Store.open(store_dir)
    notes = []
    if store.pending_path.is_file():
        pending = read_json(store.pending_path)
        notes.append(
            f"a commit of ledger entry {pending['entry']['seq']} was interrupted; the next `unmem forget` or "
            "`unmem store rollback` finishes or undoes it"
        )
        return VerifyReport(len(store.entries()), -1, "", 0, 0, notes)
    entries = store.checked_entries()
    versions = store.versions(entries)
    for version in versions.values():
        problem = store.version_problem(version)
        if problem is not None:
            entry = entries[version.entry]
            raise UnmemError(f"ledger entry {version.entry} ({_what(entry)}) does not match: {problem}")
    made = {version_name(n) for n, v in versions.items() if not v.referenced}
    for folder in sorted(store.versions_dir.iterdir()) if store.versions_dir.is_dir() else []:
        if folder.name not in made:
            raise UnmemError(
                f"{folder}: made by no ledger entry (the ledger holds {len(entries)}); was the ledger cut short?"
            )
    found = sorted(store.requests_dir.glob("*/receipt.json")) if store.requests_dir.is_dir() else []
    for path in [*found, *map(Path, receipts)]:
        problem = receipt_problem(read_json(path) if path.is_file() else None, entries, store.info["id"])
        if problem is not None:
            raise UnmemError(f"{path}: {problem}")
    return VerifyReport(
        len(entries),
        Store.current(entries),
        entries[-1]["hash"],
        len(versions),
        len(found) + len(receipts),
        notes,
    )


def _versions(entry: dict[str, Any]) -> str:
    """``2->3``; a refused or skipped request ``3 (kept)``; the first entry ``0``."""
    before, after = entry.get("version_before"), entry.get("version_after")
    if before is None:
        return str(after)
    return f"{before}->{after}" if before != after else f"{after} (kept)"


def _what(entry: dict[str, Any]) -> str:
    if entry["kind"] == "request":
        return f"request {entry['request']['id']}"
    return entry["kind"]


def resolve_version(store: Store, text: str | int | None) -> tuple[list[dict[str, Any]], Version]:
    entries = store.checked_entries()
    versions = store.versions(entries)
    number = Store.current(entries) if text is None else parse_version(text)
    if number not in versions:
        raise UnmemError(
            f"{store.root}: no version {number}; versions: {', '.join(map(str, sorted(versions)))}"
        )
    return entries, versions[number]


def show(store_dir: str | Path, text: str | int | None) -> dict[str, Any]:
    """A version: what it is, the entry that made it, and that request's checks."""
    store = Store.open(store_dir)
    entries, version = resolve_version(store, text)
    entry = entries[version.entry]
    info = version.describe() | {
        "path": str(version.path),
        "sha256": version.digest.get("sha256"),
        "files": len(version.digest.get("files") or {}),
        "entry": version.entry,
        "entry_hash": entry["hash"],
        "time": entry["time"],
        "current": Store.current(entries) == version.number,
        "verifies": store.version_problem(version) or "yes",
    }
    if entry["kind"] == "request":
        info["method"] = entry["method"]["name"]
        info["checks"] = entry.get("checks")
        info["receipt"] = str(store.request_dir(entry) / "receipt.json")
    return info


def export(store_dir: str | Path, text: str | int, out: str | Path, *, overwrite: bool = False) -> Path:
    """Version ``text`` as a plain Hugging Face directory (LoRA merged into the weights). A layers
    version (EUL) cannot be plain weights: ``out`` then holds its base in ``base/`` and the layers
    over it, which ``unmem.models.load_model`` reads."""
    store = Store.open(store_dir)
    entries, version = resolve_version(store, text)
    problem = store.version_problem(version)
    if problem is not None:
        raise UnmemError(f"{problem}; not exporting weights the ledger does not vouch for")
    final = check_not_an_input(out, {"store": store.root, "source": version.path})
    check_replaceable(final, overwrite)
    with atomic_dir(final, overwrite=overwrite) as staging:
        _export_into(store, store.versions(entries), version, staging)
    return final


def _export_into(store: Store, versions: dict[int, Version], version: Version, staging: Path) -> None:
    if version.kind == "full":
        for path in sorted(version.path.iterdir()):
            if path.is_file() and path.name != VERSION_FILE:
                shutil.copy2(path, staging / path.name)
        return
    if version.kind == "lora":
        from unmem.models import load_model

        model, tokenizer = load_model(version.path, device="cpu", dtype="float32")
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        return
    base = versions[version.base] if version.base is not None else None
    if base is None:
        raise UnmemError(f"version {version.number}: layers without a base version in the ledger")
    (staging / "base").mkdir()
    _export_into(store, versions, base, staging / "base")
    for name in (
        "method_layers.safetensors",
        *(p.name for p in version.path.glob("*.json")),
        *_tokenizer(version),
    ):
        if name != VERSION_FILE and (version.path / name).is_file():
            shutil.copy2(version.path / name, staging / name)
    card = read_json(version.path / MODEL_CARD) | {"base_model": "base"}
    from unmem.io import write_json

    write_json(staging / MODEL_CARD, card)


def _tokenizer(version: Version) -> list[str]:
    return [
        p.name for p in version.path.iterdir() if p.is_file() and p.name.startswith(("tokenizer", "special"))
    ]


def log_rows(store_dir: str | Path) -> list[dict[str, Any]]:
    """One row per ledger entry, for ``unmem store log``."""
    store = Store.open(store_dir)
    rows = []
    for entry in store.checked_entries():
        after = (entry.get("evaluation") or {}).get("after") or {}
        rows.append(
            {
                "seq": entry["seq"],
                "time": entry["time"][:19],
                "kind": entry["kind"],
                "request": (entry.get("request") or {}).get("id", ""),
                "method": (entry.get("method") or {}).get("name", ""),
                "outcome": entry.get("outcome", ""),
                "records": ((entry.get("data") or {}).get("forget") or {}).get("records"),
                "version": _versions(entry),
                "mia_auc": after.get("mia_loss_auc"),
                "utility": after.get("model_utility"),
                "hash": entry["hash"][:12],
            }
        )
    return rows
