"""Texts: forget, retain and holdout texts (copyrighted or licensed text a model memorised),
scored as windows (``unmem.data.windows``): MUSE's setting, without a retain model.

| set | file (``.txt``: one text; ``.jsonl`` / ``.json`` / ``.parquet``: records) | fields |
|---|---|---|
| ``verbmem["forget"]`` | ``forget`` (required) | ``text`` (cut into windows), or ``prompt`` + ``gt`` (a window as given) |
| ``verbmem["retain"]`` | ``retain`` (optional): texts to keep | the same |
| ``verbmem["holdout"]`` | ``holdout`` (optional): texts of the same kind the model has not memorised | the same |
| ``qa["real_world"]``, ``qa["world_facts"]`` | ``real_world``, ``world_facts`` (optional) | ``question``, ``answer``, ``perturbed_answer`` |
| ``general`` | ``general_eval`` (optional) | ``text`` |

Every window carries ``source``, ``line`` and ``window`` (where it came from). Membership
inference compares forget windows (members) with holdout windows (non-members). The split
name is only recorded. Unlearning trains on the ``forget`` and ``retain`` windows; calibrated
stopping compares forget with ``holdout`` (``unmem licenses --out DIR`` builds an example).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unmem.data.benchmarks.base import EvalData, FileSet, UnlearnFiles, find_file, nlu_items, require_file
from unmem.data.benchmarks.registry import register_benchmark
from unmem.data.windows import TEXT_SUFFIXES, read_windows
from unmem.errors import UnmemError

TEXT_SETS = ("forget", "retain", "holdout")
QA_TYPES = {"question": str, "answer": str, "perturbed_answer": list}


def _root(path: str | Path) -> Path:
    root = Path(path)
    if not root.is_dir():
        raise UnmemError(f"{root}: data directory not found (forget, retain, holdout texts)")
    return root


def _windows(files: FileSet, stem: str, required: bool) -> list[dict[str, Any]]:
    path = find_file(files.root, stem, TEXT_SUFFIXES)
    if path is None and not required:
        files.notes.append(f"{stem}: not found (optional; its metrics are null)")
        return []
    path = path or require_file(files.root, stem, TEXT_SUFFIXES)
    files.files.append(path)
    return read_windows(path)


def load_texts(path: str | Path, split: str = "forget") -> EvalData:
    files = FileSet(_root(path))
    windows = {name: _windows(files, name, required=name == "forget") for name in TEXT_SETS}
    qa = {
        name: files.records(name, ("question", "answer", "perturbed_answer"), optional=True, types=QA_TYPES)
        for name in ("real_world", "world_facts")
    }
    general = files.records("general_eval", ("text",), optional=True)
    return EvalData(
        benchmark="texts",
        root=files.root,
        split=split,
        qa=qa,
        verbmem=windows,
        general=[r["text"] for r in general],
        nlu=nlu_items(),
        files=files.finish(),
        notes=files.notes,
    )


def texts_unlearn_files(path: Path, split: str) -> UnlearnFiles:
    root = _root(path)
    return UnlearnFiles(
        require_file(root, "forget", TEXT_SUFFIXES),
        find_file(root, "retain", TEXT_SUFFIXES),
        holdout=find_file(root, "holdout", TEXT_SUFFIXES),
    )


register_benchmark(
    "texts",
    load_texts,
    texts_unlearn_files,
    description="forget, retain and holdout texts (plain files or JSON Lines), scored in windows",
    default_split="forget",
    order=50,
)
