"""Plain files: a directory with your own ``forget``, ``retain`` and ``holdout`` QA files.

| set | file (any of .jsonl, .json, .parquet) | fields |
|---|---|---|
| ``qa["forget"]`` | ``forget`` (required) | ``question``, ``answer``; with ``paraphrased_answer`` and ``perturbed_answer`` the truth ratio and forget quality too |
| ``qa["retain"]`` | ``retain`` (optional), the first ``max(len(forget), 100)`` | the same |
| ``qa["holdout"]`` | ``holdout`` (optional): questions the model never saw, for membership inference | ``question``, ``answer`` |
| ``qa["real_world"]``, ``qa["world_facts"]`` | ``real_world``, ``world_facts`` (optional) | ``question``, ``answer``, ``perturbed_answer`` |
| ``private``, ``general`` | ``private``, ``general_eval`` (optional) | ``text`` |

The split name is only recorded. Unlearning trains on ``forget`` and ``retain``.
"""

from __future__ import annotations

from pathlib import Path

from unmem.data.benchmarks.base import (
    EvalData,
    FileSet,
    UnlearnFiles,
    find_file,
    nlu_items,
    private_prefixed,
    require_file,
    retain_subset,
)
from unmem.data.benchmarks.registry import register_benchmark
from unmem.errors import UnmemError

QA_FIELDS = ("question", "answer")
TYPES = {"question": str, "answer": str, "perturbed_answer": list}


def _root(path: str | Path) -> Path:
    root = Path(path)
    if not root.is_dir():
        raise UnmemError(f"{root}: data directory not found (forget, retain, holdout files)")
    return root


def load_files(path: str | Path, split: str = "forget") -> EvalData:
    files = FileSet(_root(path))
    forget = files.records("forget", QA_FIELDS, types=TYPES)
    sets = {
        name: files.records(name, QA_FIELDS, optional=True, types=TYPES) for name in ("retain", "holdout")
    }
    general_sets = {
        name: files.records(name, (*QA_FIELDS, "perturbed_answer"), optional=True, types=TYPES)
        for name in ("real_world", "world_facts")
    }
    private = files.records("private", ("text",), optional=True)
    general = files.records("general_eval", ("text",), optional=True)
    return EvalData(
        benchmark="files",
        root=files.root,
        split=split,
        qa={"forget": forget, "retain": retain_subset(sets["retain"], len(forget))}
        | general_sets
        | {"holdout": sets["holdout"]},
        private=private_prefixed(private),
        general=[r["text"] for r in general],
        nlu=nlu_items(),
        files=files.finish(),
        notes=files.notes,
    )


def files_unlearn_files(path: Path, split: str) -> UnlearnFiles:
    root = _root(path)
    return UnlearnFiles(
        require_file(root, "forget"), find_file(root, "retain"), holdout=find_file(root, "holdout")
    )


register_benchmark(
    "files",
    load_files,
    files_unlearn_files,
    description="a directory with forget, retain and holdout QA files",
    default_split="forget",
    order=40,
)
