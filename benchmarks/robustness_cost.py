"""What the robustness audit costs: seconds per attack, and peak memory, on one model.

Each attack (``unmem.evaluation.attacks``) runs on the model as the ``robustness`` family runs it
(apply, then score the forget metrics again) and is timed on its own; the *ceiling* is one plain
scoring of the un-attacked model (teacher-forced forget / holdout / perturbed scores and greedy
answers), what every attack repeats at least once, so *× scoring* says how much an attack adds to
that floor. Peak memory is the process's peak resident set (``ru_maxrss``) after each attack: the
relearning attacks hold a copy of the model and its AdamW state besides the evaluated model.

The default world's `small` models (``unmem train``), one thread::

    python benchmarks/robustness_cost.py --model runs/models/target --data runs/world \\
        --threads 1 --out runs/bench/robustness_world.json

SmolLM2 fine-tuned on the micro world (docs/real-models.md; a full-weight relearning copy)::

    python benchmarks/robustness_cost.py --model runs/smollm2/target --data runs/smollm2/world \\
        --max-samples 50 --batch-size 16 --relearn-lr 1e-4 --relearn-batch-size 2 --threads 1 \\
        --out runs/bench/robustness_smollm2.json

A retain model's audit (the retain reference) costs the same again, once per retain model and
budget: ``unmem run`` caches it in ``eval/.retain_cache``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from unmem.data.benchmarks import load_benchmark
from unmem.evaluation.attacks.base import selected_attacks
from unmem.evaluation.families.robustness import run_attack, score
from unmem.evaluation.options import EvalOptions
from unmem.evaluation.session import ModelSession
from unmem.models import load_model


def peak_rss_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Model directory (or an unmem run directory).")
    parser.add_argument("--data", required=True, help="Benchmark directory.")
    parser.add_argument("--benchmark", default="world")
    parser.add_argument("--split", default="forget10")
    parser.add_argument("--max-samples", type=int, default=None, help="Cap per evaluation set.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--relearn-lr", type=float, default=EvalOptions().relearn_lr)
    parser.add_argument("--relearn-batch-size", type=int, default=EvalOptions().relearn_batch_size)
    parser.add_argument("--attacks", default=None, help="Comma-separated attacks (default: all).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    parser.add_argument("--out", help="Write the results here as JSON.")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    attacks = tuple(args.attacks.split(",")) if args.attacks else None
    opts = EvalOptions(
        robust_attacks=attacks, relearn_lr=args.relearn_lr, relearn_batch_size=args.relearn_batch_size
    )
    data = load_benchmark(args.benchmark, args.data, args.split).limited(args.max_samples)
    model, tokenizer = load_model(args.model, device="cpu", dtype="float32")
    start = time.perf_counter()
    base = score(ModelSession(model, tokenizer, data, opts, args.batch_size))
    ceiling = time.perf_counter() - start
    scoring_rss = peak_rss_mb()
    rows = []
    for spec in selected_attacks(opts):
        why = spec.missing(data, opts)
        if why is not None:
            rows.append({"attack": spec.name, "skipped": why})
            continue
        # A fresh session per attack: no score memoised by an earlier attack is reused.
        session = ModelSession(model, tokenizer, data, opts, args.batch_size)
        outcome = run_attack(session, spec, base)
        info = outcome.attacked.info
        rows.append(
            {
                "attack": spec.name,
                "kind": spec.kind,
                "seconds": round(outcome.seconds, 2),
                "times_scoring": round(outcome.seconds / ceiling, 2),
                "attack_seconds": info.get("train_seconds", info.get("quantize_seconds")),
                "steps": info.get("steps"),
                "peak_rss_mb": round(peak_rss_mb(), 1),
            }
        )
    result = {
        "model": str(args.model),
        "data": str(args.data),
        "benchmark": args.benchmark,
        "forget_questions": len(data.qa["forget"]),
        "scoring_seconds": round(ceiling, 2),
        "scoring_peak_rss_mb": round(scoring_rss, 1),
        "total_seconds": round(time.perf_counter() - start, 2),
        "attacks": rows,
        "options": {
            "relearn_lr": opts.relearn_lr,
            "relearn_epochs": opts.relearn_epochs,
            "sample_k": opts.sample_k,
        },
        "threads": torch.get_num_threads(),
        "load_1min_before": round(load, 2),
        "load_1min_after": round(os.getloadavg()[0], 2),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    table = Table(title=f"robustness audit cost: {args.model} ({len(data.qa['forget'])} forget questions)")
    for column in ("attack", "seconds", "× scoring", "attack s", "steps", "peak RSS MB"):
        table.add_column(column, justify="left" if column == "attack" else "right")
    table.add_row("(scoring, no attack)", f"{ceiling:.2f}", "1.00", "", "", f"{scoring_rss:.0f}")
    for row in rows:
        if "skipped" in row:
            table.add_row(row["attack"], "skipped", row["skipped"], "", "", "")
            continue
        table.add_row(
            row["attack"],
            f"{row['seconds']:.2f}",
            f"{row['times_scoring']:.2f}",
            "" if row["attack_seconds"] is None else f"{row['attack_seconds']:.2f}",
            "" if row["steps"] is None else str(row["steps"]),
            f"{row['peak_rss_mb']:.0f}",
        )
    Console().print(table)
    print(f"1-min load {result['load_1min_before']} before, {result['load_1min_after']} after")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
