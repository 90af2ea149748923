"""Training throughput of the built-in model presets: the machine's ceiling vs the real pipeline.

Ceiling: training steps on random token batches of one fixed length (no padding, no
data handling) — the most tokens/s this machine does for the preset. Pipeline: the
world's real length-bucketed batches, as ``unmem train`` feeds them: the base corpus
(``base``) and the target's fine-tuning corpus (``finetune``). Each is measured with 1 and
2 torch threads, and as two concurrent single-threaded processes (what
``train_world_models`` does for target + retain; the base trains alone with 2 threads).

Run: ``python benchmarks/pretrain_throughput.py --world runs/world --presets tiny small``
(the world is generated there if missing). Prints a table; ``--out FILE`` writes JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import torch

from unmem.data.collate import PromptFormat, encode_qa, encode_text, iter_batches
from unmem.data.world import World, WorldConfig, generate_world
from unmem.models import build_model, get_preset
from unmem.pretrain import PretrainConfig, base_corpus, corpus, world_tokenizer

STEPS = 20


def _batches(world_dir: str, preset_name: str, kind: str) -> tuple[object, list[dict]]:
    from transformers import AutoTokenizer

    world = World.load(world_dir)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = AutoTokenizer.from_pretrained(
            world_tokenizer(world, tmp, PretrainConfig(preset=preset_name))
        )
    qa, texts = base_corpus(world) if kind == "base" else corpus(world, None)
    examples = [encode_qa(tokenizer, r["question"], r["answer"], PromptFormat()) for r in qa]
    examples += [encode_text(tokenizer, t, max_length=PretrainConfig().max_length) for t in texts]
    batches = list(iter_batches(examples, 32, tokenizer.pad_token_id, seed=0))[: STEPS + 3]
    if kind == "ceiling":
        # Same number of tokens per step as the real batches, but one fixed length and no mask.
        mean_tokens = sum(int(b["attention_mask"].sum()) for b in batches) // len(batches)
        length = max(8, mean_tokens // 32)
        ids = torch.randint(0, len(tokenizer), (32, length))
        batches = [{"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}] * (STEPS + 3)
    return tokenizer, batches


def measure(world_dir: str, preset_name: str, kind: str, threads: int) -> float:
    """Tokens per second over STEPS optimiser steps (after 3 warm-up steps)."""
    torch.set_num_threads(threads)
    preset = get_preset(preset_name)
    tokenizer, batches = _batches(world_dir, preset_name, kind)
    model = build_model(preset, tokenizer, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens, start = 0, 0.0
    for step, batch in enumerate(batches):
        if step == 3:
            tokens, start = 0, time.perf_counter()
        kwargs = {} if kind == "ceiling" else {"attention_mask": batch["attention_mask"]}
        model(input_ids=batch["input_ids"], labels=batch["labels"], **kwargs).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
    return tokens / (time.perf_counter() - start)


def _measure_star(args: tuple[str, str, str, int]) -> float:
    return measure(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=Path("runs/world"))
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not (args.world / "world.json").is_file():
        generate_world(WorldConfig.from_preset("default"), args.world)
    rows = []
    for preset in args.presets:
        for kind in ("ceiling", "base", "finetune"):
            row = {"preset": preset, "kind": kind}
            for threads in (1, 2):
                row[f"1 process x {threads} threads"] = round(measure(str(args.world), preset, kind, threads))
            with multiprocessing.get_context("spawn").Pool(2) as pool:
                rates = pool.map(_measure_star, [(str(args.world), preset, kind, 1)] * 2)
            row["2 processes x 1 thread (total)"] = round(sum(rates))
            rows.append(row)
            print(json.dumps(row), flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"tokens/s; peak RSS of the parent process {peak:.0f} MB")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
