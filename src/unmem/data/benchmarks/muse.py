"""MUSE (Shi et al. 2024) as published: a corpus directory (``data/news`` or ``data/books`` of the
MUSE repository, or the hub's ``muse-bench/MUSE-News`` configs saved one file per split).

| set | file (any of .json, .jsonl, .parquet) | layout |
|---|---|---|
| ``verbmem["forget"]`` | ``verbmem/forget`` | list of ``{prompt, gt}`` |
| ``knowmem["forget"]`` | ``knowmem/forget_qa`` | list of ``{question, answer}`` |
| ``knowmem["retain"]`` | ``knowmem/retain_qa`` (the first ``max(len(forget), 100)``) | the same |
| ``knowmem_shots`` | ``knowmem/retain_qa_icl`` (optional; else the first 10 of ``retain_qa``, then left out of the scored set) | the same |
| ``privleak["forget"/"holdout"]`` | ``privleak/forget``, ``privleak/holdout`` | list of plain strings (the repository), or ``{text}`` records (the hub) |
| ``private``, ``general`` | ``private``, ``general_eval`` (optional, not part of MUSE) | ``text`` records |

MUSE has one forget set: ``split`` is only recorded. Its own protocol unlearns the raw
forget text (``raw/forget.txt``); ``unmem unlearn`` trains on question/answer pairs, so
an experiment on a MUSE directory unlearns ``knowmem/forget_qa`` with ``knowmem/retain_qa``
as the retain set unless the experiment names other files.
"""

from __future__ import annotations

from pathlib import Path

from unmem.data.benchmarks.base import (
    KNOWMEM_SHOT_POOL,
    EvalData,
    FileSet,
    UnlearnFiles,
    nlu_items,
    private_prefixed,
    require_file,
    retain_subset,
)
from unmem.data.benchmarks.registry import register_benchmark
from unmem.errors import UnmemError

QA_FIELDS = ("question", "answer")


def _root(path: str | Path) -> Path:
    root = Path(path)
    if not root.is_dir():
        raise UnmemError(f"{root}: MUSE data directory not found")
    return root


def load_muse(path: str | Path, split: str = "forget") -> EvalData:
    """A MUSE corpus directory; MUSE has one forget set, so ``split`` is only recorded."""
    files = FileSet(_root(path))
    verb = files.records("verbmem/forget", ("prompt", "gt"))
    know_forget = files.records("knowmem/forget_qa", QA_FIELDS)
    know_retain = files.records("knowmem/retain_qa", QA_FIELDS)
    shots = files.records("knowmem/retain_qa_icl", QA_FIELDS, optional=True)
    if not shots:
        shots, know_retain = know_retain[:KNOWMEM_SHOT_POOL], know_retain[KNOWMEM_SHOT_POOL:]
    privleak = {name: files.texts(f"privleak/{name}") for name in ("forget", "holdout")}
    private = files.records("private", ("text",), optional=True)
    general = files.records("general_eval", ("text",), optional=True)
    return EvalData(
        benchmark="muse",
        root=files.root,
        split=split,
        verbmem={"forget": verb},
        knowmem={"forget": know_forget, "retain": retain_subset(know_retain, len(know_forget))},
        knowmem_shots=shots,
        privleak=privleak,
        private=private_prefixed(private),
        general=[r["text"] for r in general],
        nlu=nlu_items(),
        files=files.finish(),
        notes=files.notes,
    )


def muse_unlearn_files(path: Path, split: str) -> UnlearnFiles:
    root = _root(path)
    return UnlearnFiles(
        require_file(root, "knowmem/forget_qa"),
        require_file(root, "knowmem/retain_qa"),
        note="MUSE unlearns raw/forget.txt; unmem's loop trains on QA, so knowmem QA stands in",
    )


register_benchmark(
    "muse",
    load_muse,
    muse_unlearn_files,
    description="a MUSE corpus directory as published (verbmem/, knowmem/, privleak/)",
    default_split="forget",
    order=30,
)
