"""TOFU (Maini et al. 2024) as published on the Hugging Face hub (``locuslab/TOFU``): one file per
config, JSON Lines under a ``.json`` name (``forget10_perturbed.json``, ...).

| set | file (any of .json, .jsonl, .parquet) | fields read |
|---|---|---|
| ``qa["forget"]`` | ``<split>_perturbed`` | ``question``, ``answer``, ``paraphrased_answer``, ``perturbed_answer`` (list) |
| ``qa["retain"]`` | ``retain_perturbed``, the first ``max(len(forget), 100)`` | the same |
| ``qa["real_world"]`` | ``real_authors_perturbed`` (optional) | ``question``, ``answer``, ``perturbed_answer`` |
| ``qa["world_facts"]`` | ``world_facts_perturbed`` (optional) | the same |
| ``qa["holdout"]`` | ``holdoutNN`` (optional; open-unlearning's release) | ``question``, ``answer`` |
| ``private``, ``general`` | ``private``, ``general_eval`` (optional, not part of TOFU) | ``text`` (+ ``phone``/``email``/``address``) |

``paraphrased_question`` is read by the robustness audit only; ``option1..4`` are not read. Unlearning
trains on ``<split>`` and ``retainNN`` (NN = 100 - the split's percentage).
"""

from __future__ import annotations

from pathlib import Path

from unmem.data.benchmarks.base import (
    PERTURBED_FIELDS,
    EvalData,
    FileSet,
    UnlearnFiles,
    find_file,
    nlu_items,
    private_prefixed,
    require_file,
    retain_subset,
    split_percent,
)
from unmem.data.benchmarks.registry import register_benchmark
from unmem.errors import UnmemError

GENERAL_FIELDS = ("question", "answer", "perturbed_answer")


def _root(path: str | Path) -> Path:
    root = Path(path)
    if not root.is_dir():
        raise UnmemError(f"{root}: TOFU data directory not found")
    return root


def load_tofu(path: str | Path, split: str = "forget10") -> EvalData:
    """A directory of TOFU files (as on the Hugging Face hub, one file per config)."""
    files = FileSet(_root(path))
    types = {"perturbed_answer": list}
    forget = files.records(f"{split}_perturbed", PERTURBED_FIELDS, types=types)
    retain = files.records("retain_perturbed", PERTURBED_FIELDS, types=types)
    real = files.records("real_authors_perturbed", GENERAL_FIELDS, optional=True, types=types)
    facts = files.records("world_facts_perturbed", GENERAL_FIELDS, optional=True, types=types)
    pct = split_percent(split)
    holdout_stem = f"holdout{pct:02d}" if pct is not None else "holdout"
    holdout = files.records(holdout_stem, ("question", "answer"), optional=True)
    private = files.records("private", ("text",), optional=True)
    general = files.records("general_eval", ("text",), optional=True)
    return EvalData(
        benchmark="tofu",
        root=files.root,
        split=split,
        qa={
            "forget": forget,
            "retain": retain_subset(retain, len(forget)),
            "real_world": real,
            "world_facts": facts,
            "holdout": holdout,
        },
        private=private_prefixed(private),
        general=[r["text"] for r in general],
        nlu=nlu_items(),
        files=files.finish(),
        notes=files.notes,
    )


def tofu_unlearn_files(path: Path, split: str) -> UnlearnFiles:
    root = _root(path)
    pct = split_percent(split)
    if pct is None:
        raise UnmemError(f"{root}: TOFU split '{split}' is not forgetNN (forget01, forget05, forget10)")
    return UnlearnFiles(
        require_file(root, split),
        require_file(root, f"retain{100 - pct:02d}"),
        holdout=find_file(root, f"holdout{pct:02d}"),
    )


register_benchmark(
    "tofu",
    load_tofu,
    tofu_unlearn_files,
    description="TOFU's files as published (locuslab/TOFU: JSON Lines named .json)",
    order=20,
)
