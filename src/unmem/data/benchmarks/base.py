"""What every benchmark loader returns (``EvalData``) and the file helpers loaders share.

A loader reads a directory laid out as some benchmark publishes it and returns the same
named sets, so evaluation never asks which benchmark it is scoring; a set a layout does
not provide stays empty and the metrics that need it are ``null``. Files may be
``.jsonl``, ``.json`` (a JSON list of objects, or JSON Lines as TOFU publishes them) or
``.parquet``; a missing file or field is an ``UnmemError`` naming the file, line and field.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from unmem.data.world import split_percent  # noqa: F401 (the layouts import it from here)
from unmem.errors import UnmemError, input_error
from unmem.io import hash_files, hash_json, read_records, read_values

SUFFIXES = (".jsonl", ".json", ".parquet")
QA_SETS = ("forget", "retain", "real_world", "world_facts", "holdout")
PERTURBED_FIELDS = ("question", "answer", "paraphrased_answer", "perturbed_answer")
KNOWMEM_SHOT_POOL = 10  # MUSE ships 10 in-context examples (knowmem/retain_qa_icl.json)
MIN_RETAIN = 100
NLU_FILE = "nlu_items.jsonl"
PII_FIELDS = ("phone", "email", "address")


@dataclass
class EvalData:
    """Named evaluation sets; an empty set means "not provided by this layout"."""

    benchmark: str
    root: Path
    split: str
    qa: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    verbmem: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    knowmem: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    knowmem_shots: list[dict[str, Any]] = field(default_factory=list)
    privleak: dict[str, list[str]] = field(default_factory=dict)
    private: list[dict[str, Any]] = field(default_factory=list)
    general: list[str] = field(default_factory=list)
    nlu: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # every file read: the content hash
    notes: list[str] = field(default_factory=list)  # optional files that were absent
    max_samples: int | None = None

    def content_hash(self) -> str:
        """Hash of the files read (names and bytes): changes when the data does, and only then.

        Each file is hashed on its own and the (name, hash) pairs sorted, so the result does
        not depend on where the data and unmem's built-in files are installed (sorting full
        paths put the built-in NLU file before or after the data depending on both)."""
        return hash_json(sorted((path.name, hash_files([path])) for path in self.files))

    def fingerprint(self) -> str:
        """Content hash + split + sample cap: what a cached result was computed on."""
        return hash_json(
            {
                "benchmark": self.benchmark,
                "split": self.split,
                "files": self.content_hash(),
                "max_samples": self.max_samples,
                "sizes": self.sizes(),
            }
        )

    def sizes(self) -> dict[str, int]:
        out = {f"qa/{k}": len(v) for k, v in self.qa.items()}
        out |= {f"verbmem/{k}": len(v) for k, v in self.verbmem.items()}
        out |= {f"knowmem/{k}": len(v) for k, v in self.knowmem.items()}
        out |= {f"privleak/{k}": len(v) for k, v in self.privleak.items()}
        out |= {"private": len(self.private), "general": len(self.general), "nlu": len(self.nlu)}
        return out

    def limited(self, max_samples: int | None) -> EvalData:
        """A copy with every set cut to its first ``max_samples`` items (shots are kept)."""
        if max_samples is None:
            return self
        if max_samples < 1:
            raise UnmemError(f"max_samples must be >= 1, got {max_samples}")

        def cut(sets: dict[str, list[Any]]) -> dict[str, list[Any]]:
            return {k: v[:max_samples] for k, v in sets.items()}

        return replace(
            self,
            qa=cut(self.qa),
            verbmem=cut(self.verbmem),
            knowmem=cut(self.knowmem),
            privleak=cut(self.privleak),
            private=self.private[:max_samples],
            general=self.general[:max_samples],
            nlu=self.nlu[:max_samples],
            max_samples=max_samples,
        )

    def has_truth_ratio(self, name: str) -> bool:
        records = self.qa.get(name) or []
        return bool(records) and all(r.get("perturbed_answer") for r in records)

    def membership_kind(self) -> str | None:
        """What MIA compares: forget vs holdout QA if present, else PrivLeak passages, else the
        continuations of forget vs holdout text windows (the ``texts`` layout)."""
        if self.qa.get("forget") and self.qa.get("holdout"):
            return "qa"
        if self.privleak.get("forget") and self.privleak.get("holdout"):
            return "text"
        if self.verbmem.get("forget") and self.verbmem.get("holdout"):
            return "windows"
        return None


@dataclass(frozen=True)
class UnlearnFiles:
    """The QA files ``unmem unlearn`` trains on for a split (``retain`` None: the layout has none)."""

    forget: Path
    retain: Path | None
    note: str | None = None  # how these files relate to the benchmark's own protocol
    holdout: Path | None = None  # never-seen QA of the same kind: calibrated stopping's reference


# -- helpers ---------------------------------------------------------------------------------------


def find_file(root: Path, stem: str, suffixes: tuple[str, ...] = SUFFIXES) -> Path | None:
    """``root/stem`` with the first of ``suffixes`` that exists (.jsonl, .json, .parquet)."""
    for suffix in suffixes:
        path = root / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def require_file(root: Path, stem: str, suffixes: tuple[str, ...] = SUFFIXES) -> Path:
    path = find_file(root, stem, suffixes)
    if path is None:
        raise UnmemError(f"{root / stem}{{{','.join(suffixes)}}}: file not found")
    return path


class FileSet:
    """Reads a layout's files, remembering every file read (the content hash) and every
    optional file that was absent (``notes``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: list[Path] = []
        self.notes: list[str] = []

    def records(
        self,
        stem: str,
        required: tuple[str, ...],
        *,
        optional: bool = False,
        types: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        path = find_file(self.root, stem)
        if path is None and optional:
            self.notes.append(f"{stem}: not found (optional; its metrics are null)")
            return []
        path = path or require_file(self.root, stem)
        self.files.append(path)
        return read_records(path, required, types=types)

    def texts(self, stem: str) -> list[str]:
        """Passages: ``text`` records, or a JSON list of plain strings (MUSE's privleak files)."""
        path = require_file(self.root, stem)
        self.files.append(path)
        values = read_values(path)
        if values and all(isinstance(value, str) for _, value in values):
            return [value for _, value in values]
        return [str(r["text"]) for r in read_records(path, ("text",))]

    def finish(self) -> list[Path]:
        """The files read, with the built-in NLU items every layout is scored on."""
        return [*self.files, nlu_path()]


def retain_subset(records: list[dict[str, Any]], n_forget: int) -> list[dict[str, Any]]:
    """The first ``max(n_forget, 100)`` retain records (the convention for the retain set)."""
    return records[: max(n_forget, MIN_RETAIN)]


def nlu_items() -> list[dict[str, Any]]:
    """The built-in zero-shot multiple-choice items: ``{question, choices, answer}``."""
    path = resources.files("unmem.data") / NLU_FILE
    with resources.as_file(path) as real:
        items = read_records(real, ("question", "choices"), types={"choices": list, "answer": int})
        for lineno, item in enumerate(items, start=1):
            if not 0 <= item.get("answer", -1) < len(item["choices"]):
                raise input_error(real, "answer index outside choices", line=lineno, field="answer")
    return items


def nlu_path() -> Path:
    with resources.as_file(resources.files("unmem.data") / NLU_FILE) as real:
        return Path(real)


def private_prefixed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Private records that carry at least one PII value (the extraction prompts need one)."""
    return [r for r in records if any(r.get(f) for f in PII_FIELDS)]
