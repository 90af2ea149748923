"""The built-in world (``unmem world --out DIR``) as evaluation data.

| set | files |
|---|---|
| ``qa["forget"]`` | ``qa/<split>`` |
| ``qa["retain"]`` | ``qa/retainNN``, the first ``max(len(forget), 100)`` |
| ``qa["real_world"]``, ``qa["world_facts"]`` | ``qa/real_world``, ``qa/world_facts`` |
| ``qa["holdout"]`` | ``qa/holdoutNN`` |
| ``verbmem["forget"/"holdout"]`` | the split's entities in ``muse/verbmem_*`` (bios halved into ``prompt``/``gt``) |
| ``knowmem["forget"/"retain"]`` | ``muse/knowmem_*``; the first 10 retain KnowMem QA are the shots, left out of the retain set |
| ``privleak["forget"/"holdout"]`` | the whole bios of forget / holdout entities |
| ``private`` | ``text/private`` of the forget entities |
| ``general`` | ``text/general_eval`` |

``requestsNN`` evaluates the union of the world's first NN deletion requests (one person each,
``World.requests``) against the largest split's holdout and retain sets. Unlearning trains on
``qa/<split>`` and ``qa/retainNN``. Every QA file carries
``paraphrased_answer``; the TOFU family reads it on forget and retain only (real_world and
world_facts are scored against ``answer``, as TOFU's reference does; docs/data-format.md).
Entity QA also carry ``paraphrased_question`` (worlds of generator 3), which only the robustness
audit asks.
"""

from __future__ import annotations

from pathlib import Path

from unmem.data.benchmarks.base import (
    KNOWMEM_SHOT_POOL,
    EvalData,
    UnlearnFiles,
    nlu_items,
    nlu_path,
    private_prefixed,
    retain_subset,
    split_percent,
)
from unmem.data.benchmarks.registry import register_benchmark
from unmem.data.world import World, request_count
from unmem.errors import UnmemError


def _checked_split(world: World, split: str) -> int:
    pct = split_percent(split)
    if pct is None or split not in world.splits:
        known = ", ".join(s for s in world.splits if s.startswith("forget"))
        raise UnmemError(f"{world.root}: unknown forget split '{split}'; known: {known}")
    return pct


def _forget_set(world: World, split: str) -> tuple[list[dict], int]:
    """The forget QA of ``split`` and the percentage whose holdout and retain splits go with it:
    a forgetNN split's own, or for ``requestsNN`` (the union of the world's first NN deletion
    requests) the largest split's, which hold every request's holdout and none of its people."""
    if request_count(split) is None:
        return world.qa(split), _checked_split(world, split)
    ids = set(world.entity_ids(split))
    return [r for r in world.qa("train") if r["entity_id"] in ids], max(world.config.forget_sizes())


def _retain_size(world: World, split: str, forget: list[dict], pct: int) -> int:
    """How many retain QA to score: as many as the forget set (at least 100), and for the
    requests the same set at every step, the largest forget split's, so utility is comparable."""
    return len(world.qa(f"forget{pct:02d}")) if request_count(split) is not None else len(forget)


def load_world(path: str | Path, split: str = "forget10") -> EvalData:
    """The built-in world (``unmem world --out DIR``); ``split`` is a forgetNN split or
    ``requestsNN``, the union of the world's first NN deletion requests (``World.requests``)."""
    world = World.load(path)
    forget, pct = _forget_set(world, split)
    largest = max(world.config.forget_sizes())
    forget_ids = set(world.entity_ids(split))
    holdout_ids = set(world.entity_ids(f"holdout{pct:02d}"))
    root = world.root
    retain = retain_subset(world.qa(f"retain{100 - pct:02d}"), _retain_size(world, split, forget, pct))
    verb_forget = [r for r in world.muse(f"verbmem_forget{largest:02d}") if r["entity_id"] in forget_ids]
    verb_holdout = [r for r in world.muse(f"verbmem_holdout{largest:02d}") if r["entity_id"] in holdout_ids]
    know_forget = [r for r in world.muse(f"knowmem_forget{largest:02d}") if r["entity_id"] in forget_ids]
    know_retain_all = world.muse(f"knowmem_retain{100 - largest:02d}")
    shots = know_retain_all[:KNOWMEM_SHOT_POOL]
    know_retain = retain_subset(know_retain_all[KNOWMEM_SHOT_POOL:], len(know_forget))
    private = [r for r in world.texts("private") if r.get("entity_id") in forget_ids]
    files = [root / "world.json", *(root / p for p in world.manifest["files"]), nlu_path()]
    return EvalData(
        benchmark="world",
        root=root,
        split=split,
        qa={
            "forget": forget,
            "retain": retain,
            "real_world": world.qa("real_world"),
            "world_facts": world.qa("world_facts"),
            "holdout": world.qa(f"holdout{pct:02d}"),
        },
        verbmem={"forget": verb_forget, "holdout": verb_holdout},
        knowmem={"forget": know_forget, "retain": know_retain},
        knowmem_shots=shots,
        # A bio passage was halved into prompt + gt at a space: joining them restores it.
        privleak={
            "forget": [f"{r['prompt']} {r['gt']}" for r in verb_forget],
            "holdout": [f"{r['prompt']} {r['gt']}" for r in verb_holdout],
        },
        private=private_prefixed(private),
        general=[r["text"] for r in world.texts("general_eval")],
        nlu=nlu_items(),
        files=files,
    )


def world_unlearn_files(path: Path, split: str) -> UnlearnFiles:
    world = World.load(path)
    pct = _checked_split(world, split)
    qa = world.root / "qa"
    return UnlearnFiles(
        qa / f"{split}.jsonl", qa / f"retain{100 - pct:02d}.jsonl", holdout=qa / f"holdout{pct:02d}.jsonl"
    )


register_benchmark(
    "world",
    load_world,
    world_unlearn_files,
    description="the built-in world of fictitious people (`unmem world`)",
    order=10,
)
