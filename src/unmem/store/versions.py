"""A store's model versions: what the ledger says each one is, and the SHA-256 of its files.

Every version is a directory ``unmem.models.load_model`` reads:

- ``full``: a Hugging Face model directory (safetensors weights, config, tokenizer);
- ``lora``: a LoRA adapter whose ``unmem_model.json`` names the version it sits on;
- ``layers``: EUL's unlearning layers, fused over all requests so far, on a ``base`` version
  (``method_layers.safetensors``); each request's own layer and the Gram matrices of its forget
  inputs (never the data) stay in the version of that request (``eul/``), so a later request
  fuses them again without retraining any.

Version 0 is the model the store started from: a copy (``versions/v0000``) or the source
directory itself, referenced by the hash of its model files. ``store_version.json`` repeats
what the ledger says of the version, so a directory read on its own says what it is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from unmem.io import OUTPUT_MARKER
from unmem.models import MODEL_FILE_PATTERNS
from unmem.store.ledger import canonical

VersionKind = Literal["full", "lora", "layers"]
VERSION_FILE = "store_version.json"
EUL_DIR = "eul"  # a layers version's own request: its unlearning layer and Gram matrices
LAYER_FILE = "layer.safetensors"
GRAMS_FILE = "grams.safetensors"


@dataclass
class Version:
    """A version as the ledger entry that made it describes it."""

    number: int
    kind: VersionKind
    path: Path  # the directory to load
    entry: int  # seq of the ledger entry that made it
    digest: dict[str, Any]  # {"sha256": ..., "files": {relative path: sha256}}
    parent: int | None = None  # the version the request started from
    base: int | None = None  # layers: the version the layers sit on; lora: the adapter's base
    components: list[int] = field(default_factory=list)  # layers: versions whose own layer is fused here
    request: str | None = None
    referenced: bool = False  # version 0 kept where it was (not copied)

    def describe(self) -> dict[str, Any]:
        """What ``store_version.json`` and the ledger record of it (besides the digest)."""
        return {
            "version": self.number,
            "kind": self.kind,
            "parent": self.parent,
            "base": self.base,
            "components": self.components,
            "request": self.request,
        }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def version_files(directory: Path, referenced: bool) -> list[Path]:
    """The files a version's hash covers: in the store every file (but unmem's output marker);
    a referenced source, only its model files (weights, config, tokenizer), top level."""
    if referenced:
        found = {p for pattern in (*MODEL_FILE_PATTERNS, "*.json") for p in directory.glob(pattern)}
        return sorted(p for p in found if p.is_file())
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != OUTPUT_MARKER)


def digest(directory: Path, referenced: bool = False) -> dict[str, Any]:
    """{"sha256": hash of the file list, "files": {relative path: sha256 of its bytes}}."""
    files = {
        p.relative_to(directory).as_posix(): file_sha256(p) for p in version_files(directory, referenced)
    }
    return {"sha256": hashlib.sha256(canonical(files)).hexdigest(), "files": files}


def digest_difference(recorded: dict[str, Any], found: dict[str, Any]) -> str | None:
    """The first file whose hash differs, is missing or was added; None when they agree."""
    old, new = recorded.get("files") or {}, found.get("files") or {}
    for name in sorted(set(old) | set(new)):
        if name not in new:
            return f"{name} is missing"
        if name not in old:
            return f"{name} was added"
        if old[name] != new[name]:
            return f"{name} has sha256 {new[name][:16]}…, the ledger recorded {old[name][:16]}…"
    if recorded.get("sha256") != found.get("sha256"):
        return f"its hash {found.get('sha256', '')[:16]}… differs from the ledger's {recorded.get('sha256', '')[:16]}…"
    return None
