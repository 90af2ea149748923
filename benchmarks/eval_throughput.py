"""Evaluation throughput: samples/s of teacher-forced scoring and of batched greedy generation.

Measures the two model calls every metric family is built from
(``unmem.metrics.scoring.answer_token_scores`` and ``generate_answers``) on the world's
forget + retain QA, plus the peak resident memory of the process.

Run (a fresh ``small``-preset model, tokenizer trained on the world's text)::

    python benchmarks/eval_throughput.py --world runs/world --out runs/bench/eval_throughput.json

or on a trained model (``--model DIR``, a model directory or an unmem run directory),
optionally followed by one full ``unmem eval`` (``--full-eval``) to time every family.
Without ``--world`` a default world is generated in a temporary directory.

SmolLM2 (``unmem model import-gguf``, docs/real-models.md), CPU, about 5 minutes idle::

    python benchmarks/eval_throughput.py --model runs/smollm2 --samples 64 --batch-size 16 \
        --full-eval --max-samples 16 --out runs/bench/eval_smollm2.json

On a GPU add ``--device cuda --dtype bfloat16`` (peak memory is then
``torch.cuda.max_memory_allocated``). Generation reports how many answers stopped at an
end-of-sequence token before their budget (greedy decoding, KV cache, prompts sorted by
length; ``unmem.metrics.scoring.generate_ids``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from unmem.data.collate import PromptFormat
from unmem.data.world import World, WorldConfig, generate_world
from unmem.metrics import scoring
from unmem.models import build_model, get_preset, load_model, train_tokenizer
from unmem.pretrain import corpus


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def fresh_model(world: World, preset: str, seed: int) -> tuple[torch.nn.Module, object]:
    """A randomly initialised preset model with a BPE tokenizer trained on the world's corpus."""
    spec = get_preset(preset)
    qa, texts = corpus(world, exclude_split=None)
    lines = texts + [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in qa]
    tokenizer = train_tokenizer(lines, spec.vocab_size)
    return build_model(spec, tokenizer, seed).eval(), tokenizer


def timed(fn, repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls (the machine may be shared) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--world", help="World directory (default: generate the default world in a temp dir)."
    )
    parser.add_argument("--model", help="Model directory (default: a fresh --preset model).")
    parser.add_argument("--preset", default="small", help="Preset of the fresh model: tiny, small, base.")
    parser.add_argument("--split", default="forget10")
    parser.add_argument("--samples", type=int, default=256, help="QA pairs: forget first, then retain.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32, help="Generation budget per answer.")
    parser.add_argument("--repeats", type=int, default=2, help="Timed repeats; the best is reported.")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="Weights of --model: float32, bfloat16.")
    parser.add_argument("--max-samples", type=int, help="--full-eval: cap on samples per data set.")
    parser.add_argument("--metrics", help="--full-eval: comma-separated families (default: all).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full-eval", action="store_true", help="Also time one full `unmem eval`.")
    parser.add_argument("--out", help="Write the results as JSON here.")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    tmp = tempfile.TemporaryDirectory(prefix="unmem-bench-")
    world_dir = Path(args.world) if args.world else generate_world(WorldConfig(), Path(tmp.name) / "world")
    world = World.load(world_dir)
    if args.model:
        model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
        model_name = args.model
    else:
        model, tokenizer = fresh_model(world, args.preset, args.seed)
        model = model.to(args.device)
        model_name = f"fresh {args.preset} preset"
    pct = int(args.split.removeprefix("forget"))
    records = (world.qa(args.split) + world.qa(f"retain{100 - pct:02d}"))[: args.samples]
    questions = [r["question"] for r in records]
    answers = [r["answer"] for r in records]
    fmt = PromptFormat.for_tokenizer(tokenizer)
    n_params = sum(p.numel() for p in model.parameters())

    # Warm-up: first calls pay for allocator growth and kernel selection.
    scoring.answer_token_scores(model, tokenizer, questions[:8], answers[:8], fmt, batch_size=8)
    score_s, scores = timed(
        lambda: scoring.answer_token_scores(
            model, tokenizer, questions, answers, fmt, batch_size=args.batch_size
        ),
        args.repeats,
    )
    answer_tokens = sum(s.n_tokens for s in scores)
    # generate_answers = encode prompts + generate_ids + decode; generate_ids gives exact token counts.
    prompt_ids = [
        scoring.encode_prompt(tokenizer, fmt.prompt(tokenizer, q), add_bos=not fmt.chat) for q in questions
    ]
    gen_s, generated = timed(
        lambda: scoring.generate_ids(
            model,
            prompt_ids,
            max_new_tokens=args.max_new_tokens,
            pad_token_id=scoring.pad_token_id(tokenizer),
            eos_token_id=tokenizer.eos_token_id,
            batch_size=args.batch_size,
        ),
        args.repeats,
    )
    new_tokens = sum(len(ids) for ids in generated)
    stopped = sum(len(ids) < args.max_new_tokens for ids in generated)  # ended at eos within budget
    results: dict = {
        "model": model_name,
        "parameters": n_params,
        "device": args.device,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "samples": len(records),
        "scoring": {
            "seconds": score_s,
            "samples_per_s": len(records) / score_s,
            "answer_tokens_per_s": answer_tokens / score_s,
        },
        "generation": {
            "seconds": gen_s,
            "samples_per_s": len(records) / gen_s,
            "new_tokens_per_s": new_tokens / gen_s,
            "max_new_tokens": args.max_new_tokens,
            "mean_new_tokens": new_tokens / max(len(records), 1),
            "stopped_at_eos": stopped / max(len(records), 1),
        },
        "peak_rss_mb": peak_rss_mb(),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    if args.full_eval:
        from unmem.evaluation import evaluate, read_summary

        model_dir = args.model
        if model_dir is None:
            model_dir = Path(tmp.name) / "model"
            model.save_pretrained(model_dir)
            tokenizer.save_pretrained(model_dir)
        start = time.perf_counter()
        out = evaluate(
            model_dir,
            data=world_dir,
            split=args.split,
            out_dir=Path(tmp.name) / "eval",
            device=args.device,
            dtype=args.dtype,
            batch_size=args.batch_size,
            max_samples=args.max_samples,
            metrics=args.metrics.split(",") if args.metrics else None,
            threads=args.threads if args.device == "cpu" else None,
        )
        results["full_eval"] = {
            "seconds": time.perf_counter() - start,
            "families": read_summary(out).seconds,
        }
        results["peak_rss_mb"] = peak_rss_mb()
    if args.device.startswith("cuda"):
        results["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20

    table = Table("measure", "value", title=f"eval throughput: {model_name} ({n_params / 1e6:.2f}M params)")
    table.add_row("scoring samples/s", f"{results['scoring']['samples_per_s']:.1f}")
    table.add_row("scoring answer tokens/s", f"{results['scoring']['answer_tokens_per_s']:.0f}")
    table.add_row(
        f"generation samples/s (≤{args.max_new_tokens} new)", f"{results['generation']['samples_per_s']:.1f}"
    )
    table.add_row("generation new tokens/s", f"{results['generation']['new_tokens_per_s']:.0f}")
    table.add_row("answers stopped at eos", f"{results['generation']['stopped_at_eos']:.0%}")
    table.add_row("peak RSS (MB)", f"{results['peak_rss_mb']:.0f}")
    if "peak_gpu_mb" in results:
        table.add_row("peak GPU memory (MB)", f"{results['peak_gpu_mb']:.0f}")
    if "full_eval" in results:
        table.add_row("full eval wall (s)", f"{results['full_eval']['seconds']:.1f}")
    for family, seconds in (results.get("full_eval") or {}).get("families", {}).items():
        table.add_row(f"full eval: {family} (s)", f"{seconds:.1f}")
    Console().print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(args.out)
    tmp.cleanup()
    return results


if __name__ == "__main__":
    main()
