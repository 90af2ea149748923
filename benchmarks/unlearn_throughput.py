"""Unlearning throughput: every method's training step against the model's own ceiling.

For each model and method: the step time of unmem's loop (``MethodForward`` + backward +
gradient clipping + AdamW, exactly what ``unmem unlearn`` runs per step, with its defaults:
cached reference, fused passes, logit windows), tokens/s and peak memory; and, measured in
the same process on the same batches (alternating with the method's steps, so that a shared
machine's load hits both alike), the **ceiling**: one plain Hugging Face step
(``model(..., labels=...)`` forward + backward + clip + AdamW) over one batch holding every
sequence the method's step runs through the model (forget, retain, refusals). Reported:
``ratio`` = ceiling step time / method step time (1.0 = the method costs no more than a
plain fine-tuning step on its own data), and ``ratio_10ep``, which also charges the one-off
work before the first step (the cached reference, a method's setup) to a 10-epoch run over
the data (forget10 = 120 QA, retain90 = 1080 QA of the default world; 15 steps per epoch at
batch 8). One-off work is timed on ``--one-off-sample`` examples per role and scaled to the
whole set.

Models: ``small`` (a fresh ``small``-preset world model: 0.26M parameters, a BPE tokenizer
trained on the QA), any Hugging Face directory (``--model runs/smollm2``; convert the
SmolLM2 GGUF with ``unmem model import-gguf``, docs/real-models.md), or random weights from
a config (``--config-model llama-1b``: Llama-3.2-1B's shape with SmolLM2's 49k vocabulary,
1.07B parameters; or a model directory / config.json: its architecture, e.g. SmolLM2's where
its weights cannot travel). Weights do not change a step's speed. ``--lora`` adds LoRA rows (EUL trains its own
layers and has no LoRA row).

Each (model, method) runs in a fresh process on CPU, so that peak RSS is that job's (the
method's warm-up steps run before any ceiling step); on CUDA all jobs share one process and
peak memory is ``torch.cuda.max_memory_allocated`` per job. MFU = 6·N·tokens/s / (``--peak-tflops``·1e12),
N = all parameters (for LoRA, an upper bound on useful FLOPs).

Also measured: ``--two-pass`` times GradDiff's step as unmem ran it before this benchmark
existed (two separate full-width passes, full float32 log-softmax; commit a79c1f6) against
today's on the same batch, and checks that loss and gradients agree to 1e-5.

Runs (wall times on an idle 2-core CPU; see README "Measured here"):

    python benchmarks/unlearn_throughput.py --models small                     # ~2 min
    python benchmarks/unlearn_throughput.py --models runs/smollm2 --two-pass \\
        --methods npo,grad_diff --steps 3                                      # ~4 min
    python benchmarks/unlearn_throughput.py --models runs/smollm2 --lora       # ~30 min, every method
    # GPU (bf16 autocast, MFU against the H200's dense bf16 peak):
    python benchmarks/unlearn_throughput.py --device cuda --precision bf16 --peak-tflops 989 \\
        --models runs/smollm2 --config-model llama-1b --lora --batch-size 16 --out runs/bench/gpu.json
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from unmem.config import TrainingSettings, build_config
from unmem.data.collate import Example, PromptFormat, encode_records
from unmem.methods.registry import SetupContext, all_methods, get_method
from unmem.models import frozen_copy
from unmem.train.forward import MethodForward, accepts_logits_to_keep, policy_roles
from unmem.train.reference import CacheRequest, build_reference_cache
from unmem.train.unlearning import Pair, _collate_pairs, _make_idk, _role_collate, _wrap_model

EPOCHS = 10  # the field's recipe; one-off work is charged to a run this long
# Llama-3.2-1B's shape (16 layers, 2048 wide, GQA 32/8 heads, SwiGLU 8192) with SmolLM2's vocabulary.
LLAMA_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
    "rope_theta": 500000.0,
}


@dataclass(frozen=True)
class Job:
    model: str  # "small", a model directory, or "config:NAME_OR_PATH"
    method: str  # a method id, "ceiling-only" is never a job: every job measures its ceiling
    lora: bool
    reference: str = "cached"


def uptime_load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def peak_rss_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


# ----------------------------------------------------------------------------- models and data


def qa_records(world_dir: Path | None, tmp: Path) -> tuple[list[dict], list[dict]]:
    """forget10 and retain90 of the given world, or of the default world generated in ``tmp``."""
    from unmem.data.world import World, WorldConfig, generate_world

    world = World.load(world_dir if world_dir else generate_world(WorldConfig(), tmp / "world"))
    return world.qa("forget10"), world.qa("retain90")


def load_job_model(job: Job, args: argparse.Namespace, records: list[dict]) -> tuple[torch.nn.Module, Any]:
    """An fp32 model (as unmem trains it: bf16 is autocast) and its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    from unmem.models import build_model, get_preset, load_model, load_tokenizer, train_tokenizer

    if job.model == "small":
        preset = get_preset("small")
        texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in records]
        tokenizer = train_tokenizer(texts, preset.vocab_size)
        return build_model(preset, tokenizer, seed=0), tokenizer
    if not job.model.startswith("config:"):
        return load_model(job.model, device="cpu", dtype="float32")
    name = job.model.removeprefix("config:")
    tokenizer = load_tokenizer(args.config_tokenizer)
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id}
    ids["eos_token_id"] = tokenizer.eos_token_id
    if name == "llama-1b":
        config = LlamaConfig(**LLAMA_1B, vocab_size=len(tokenizer), **ids)
    else:  # a model directory or its config.json: the architecture only
        config = AutoConfig.from_pretrained(Path(name).parent if name.endswith(".json") else name)
    torch.manual_seed(0)
    with torch.device(args.device):  # random init on the GPU takes a second, on a CPU a minute
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.float(), tokenizer


def role_examples(tokenizer: Any, forget: list[dict], retain: list[dict]) -> dict[str, list[Example]]:
    fmt = PromptFormat.for_tokenizer(tokenizer)
    return {
        "forget": encode_records(tokenizer, forget, fmt, max_length=256),
        "retain": encode_records(tokenizer, retain, fmt, max_length=256),
        "idk": _make_idk(forget, tokenizer, fmt, 256, seed=0),
    }


def step_batches(
    spec: Any, needs: Any, data: dict[str, list[Example]], pad: int, cache: Any, batch_size: int, count: int
) -> list[dict[str, Any]]:
    """``count`` distinct step batches, built by unmem's own collate functions: forget (with
    refusals) plus a retain batch, or, for EUL's alternating schedule, retain and forget in turn."""
    forget_collate = _role_collate("forget", pad, cache)
    idk_collate = _role_collate("idk", pad, cache)
    retain_collate = _role_collate("retain", pad, cache)
    batches = []
    for i in range(count):
        rows = slice(i * batch_size, (i + 1) * batch_size)
        idk = data["idk"][rows] if needs.idk else [None] * batch_size
        pairs = [Pair(f, d) for f, d in zip(data["forget"][rows], idk, strict=False)]
        step = _collate_pairs(pairs, forget_collate, idk_collate)
        if spec.schedule == "alternate":
            step = step if i % 2 else {"retain": retain_collate(data["retain"][rows])}
        elif needs.retain:
            step["retain"] = retain_collate(data["retain"][rows])
        batches.append(step)
    return batches


# ----------------------------------------------------------------------------- steps


def _concat(parts: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """One right-padded batch holding every row of ``parts`` (labels -100 on the padding)."""
    width = max(p["input_ids"].shape[1] for p in parts)

    def cat(key: str, value: int) -> torch.Tensor:
        return torch.cat(
            [torch.nn.functional.pad(p[key], (0, width - p[key].shape[1]), value=value) for p in parts]
        )

    return {
        "input_ids": cat("input_ids", 0),
        "attention_mask": cat("attention_mask", 0),
        "labels": cat("labels", -100),
    }


class Stepper:
    """One optimiser step as unmem's loop takes it (``loop._optimise``), for any loss function.

    AdamW as unmem builds it (fused); ``fused=False`` is torch's default (foreach), what
    unmem used at a79c1f6.
    """

    def __init__(
        self, accelerator: Any, model: torch.nn.Module, *, fused: bool = True, prepared: bool = False
    ) -> None:
        self.accelerator = accelerator
        self.params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.params, lr=1e-5, weight_decay=0.01, fused=fused or None)
        if prepared:  # a second optimiser for a model another Stepper prepared
            self.model, self.optimizer = model, accelerator.prepare_optimizer(optimizer)
        else:
            self.model, self.optimizer = accelerator.prepare(model, optimizer)

    def step(self, loss_fn: Any, batch: dict[str, Any]) -> float:
        loss, _ = loss_fn(self.model, batch)
        value = float(loss.detach())
        self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return value


def ceiling_loss(spec: Any) -> Any:
    """The plain Hugging Face step on the same sequences: one batch, full logits, its own loss."""

    def loss_fn(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        plain = _concat([batch[role] for role in policy_roles(spec, batch)])
        return model(**plain).loss, {}

    return loss_fn


def timed(stepper: Stepper, loss_fn: Any, batches: list[dict], warmup: int, steps: int) -> list[float]:
    """Seconds per step of ``steps`` steps after ``warmup`` (cycling through ``batches``)."""
    cuda = stepper.accelerator.device.type == "cuda"
    times = []
    for i in range(warmup + steps):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        stepper.step(loss_fn, batches[i % len(batches)])
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def two_pass_graddiff_loss(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
    """GradDiff's step as unmem computed it at a79c1f6: a full-width pass per role, the whole
    float32 log-softmax gathered at the labels, −NLL_forget + NLL_retain."""

    def nll(part: dict[str, Any]) -> torch.Tensor:
        logits = model(input_ids=part["input_ids"], attention_mask=part["attention_mask"]).logits[:, :-1]
        labels = part["labels"][:, 1:]
        mask = labels != -100
        logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.masked_fill(~mask, 0)[..., None])
        return -(logps.squeeze(-1) * mask).sum() / mask.sum().clamp(min=1)

    forget_nll = nll(batch["forget"])
    return -forget_nll + nll(batch["retain"]), {"forget_nll": float(forget_nll.detach())}


# ----------------------------------------------------------------------------- one job


def _accelerator(args: argparse.Namespace) -> Any:
    from unmem.train.setup import make_accelerator

    return make_accelerator(TrainingSettings(device=args.device, precision=args.precision))


def one_off_reference(
    model: torch.nn.Module,
    job: Job,
    spec: Any,
    cfg: Any,
    data: dict,
    layers: list[int],
    args: Any,
    device: Any,
) -> tuple[Any, float]:
    """(what MethodForward reads the reference from, seconds of one-off work scaled to the full data)."""
    from unmem.train.reference import ReferenceCache

    if not spec.needs(cfg).ref:
        return None, 0.0
    declared = spec.reference_outputs(cfg)
    if job.reference == "live" or not declared:
        return frozen_copy(model).to(device), 0.0
    sample = max(args.one_off_sample, args.batches * args.batch_size)
    outputs, head, seconds = {}, None, 0.0
    for role, kinds in declared.items():
        examples = data[role][:sample]
        # As unmem.train.unlearning._reference asks: 4 training batches at once, the run's precision.
        autocast = torch.bfloat16 if args.precision == "bf16" else None
        size = 4 * args.batch_size
        request = CacheRequest({role: kinds}, {role: examples}, layers, 0, size, autocast)
        # Warm-up (first calls pick kernels and grow allocators): it is paid once, not per example.
        warm = CacheRequest({role: kinds}, {role: examples[:size]}, layers, 0, size, autocast)
        build_reference_cache(model, warm, device, model_hash="benchmark", cache_dir=None)
        start = time.perf_counter()
        part = build_reference_cache(model, request, device, model_hash="benchmark", cache_dir=None)
        seconds += (time.perf_counter() - start) * len(data[role]) / len(examples)
        outputs |= part.outputs
        head = head or part.head
    return ReferenceCache(outputs, head, {}, autocast), seconds


def _steps_per_run(spec: Any, cfg: Any, data: dict, batch_size: int) -> int:
    forget = -(-len(data["forget"]) // batch_size)
    if spec.schedule != "alternate":
        return EPOCHS * forget
    retain = -(-len(data["retain"]) // batch_size)  # EUL: a retain phase (capped), then a forget phase
    if spec.retain_phase_batches is not None:
        retain = min(retain, spec.retain_phase_batches(cfg, forget))
    return EPOCHS * (forget + retain)


def _memory(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb()


def measure(job: Job, args: argparse.Namespace) -> dict[str, Any]:
    """Method phase first (its peak memory), then the ceiling on the same batches, same process."""
    from accelerate.utils import send_to_device

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="unmem-bench-") as tmp:
        forget, retain = qa_records(args.world, Path(tmp))
    model, tokenizer = load_job_model(job, args, forget + retain)
    data = role_examples(tokenizer, forget, retain)
    spec = get_method(job.method)
    cfg = spec.make_config()
    accelerator = _accelerator(args)
    device = accelerator.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    layers = spec.hidden_layers(cfg, model.config.num_hidden_layers) if spec.hidden_layers else []
    reference, one_off = one_off_reference(model, job, spec, cfg, data, layers, args, device)
    # As unmem wraps it: a method's own layers (EUL), LoRA, or what the method trains (RMU's MLPs).
    settings = {"method": job.method, "lora": job.lora, "lora_targets": args.lora_targets}
    model = _wrap_model(model, spec, cfg, build_config(settings))
    n_params = sum(p.numel() for p in model.parameters())
    stepper = Stepper(accelerator, model)
    unwrapped = accelerator.unwrap_model(stepper.model)
    start = time.perf_counter()
    live = reference if isinstance(reference, torch.nn.Module) else None
    context = SetupContext(unwrapped, live, tokenizer, forget, retain, device)
    state = spec.setup(context, cfg) if spec.setup else None
    one_off += time.perf_counter() - start
    forward = MethodForward(spec, cfg, reference, layers, state, window=accepts_logits_to_keep(unwrapped))
    cache = None if live is not None else reference
    batches = step_batches(
        spec, spec.needs(cfg), data, tokenizer.pad_token_id, cache, args.batch_size, args.batches
    )
    batches = [send_to_device(b, device) for b in batches]
    timed(stepper, forward, batches, args.warmup, 0)  # the method's warm-up first: its peak memory
    method_peak = _memory(device)
    ceiling = ceiling_loss(spec)
    timed(stepper, ceiling, batches, args.warmup, 0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    method_s, ceiling_s = [], []
    start = time.perf_counter()
    # Alternate, so that a shared machine's load hits both alike; small models: many steps.
    while len(method_s) < args.steps or (
        time.perf_counter() - start < args.min_seconds and len(method_s) < 200
    ):
        method_s += timed(stepper, forward, batches, 0, 1)
        ceiling_s += timed(stepper, ceiling, batches, 0, 1)
    tokens = statistics.mean(sum(b[r]["n_tokens"] for r in policy_roles(spec, b)) for b in batches)
    result = summarise(
        job, method_s, ceiling_s, tokens, one_off, _steps_per_run(spec, cfg, data, args.batch_size), args
    )
    result |= {"parameters": n_params, "method_peak_mb": round(method_peak, 1)}
    if args.peak_tflops:  # model FLOPs utilisation: 6·N FLOPs per token trained
        for key, rate in (("mfu", result["tokens_per_s"]), ("ceiling_mfu", result["ceiling_tokens_per_s"])):
            result[key] = round(6 * n_params * rate / (args.peak_tflops * 1e12), 4)
    if device.type == "cuda":  # the timed steps of both: the larger is the ceiling's (full logits)
        result["steps_peak_mb"] = round(_memory(device), 1)
    accelerator.free_memory()
    return result


def _release(device: str) -> None:
    """Between in-process jobs: drop the last job's blocks, so that its allocations do not shape the next."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def summarise(
    job: Job,
    method_s: list[float],
    ceiling_s: list[float],
    tokens: float,
    one_off: float,
    run_steps: int,
    args: Any,
) -> dict[str, Any]:
    step, ceiling = statistics.median(method_s), statistics.median(ceiling_s)
    result = asdict(job) | {
        "step_s": round(step, 4),
        "ceiling_step_s": round(ceiling, 4),
        "tokens_per_step": tokens,
        "tokens_per_s": round(tokens / step, 1),
        "ceiling_tokens_per_s": round(tokens / ceiling, 1),
        "ratio": round(ceiling / step, 3),
        "one_off_s": round(one_off, 2),
        "run_steps": run_steps,
        "ratio_10ep": round(ceiling * run_steps / (step * run_steps + one_off), 3),
        "step_times": [round(t, 4) for t in method_s],
        "ceiling_times": [round(t, 4) for t in ceiling_s],
    }
    return result


def two_pass_check(model_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """GradDiff batch B + B: today's step vs a79c1f6's two-pass step, same weights and batches."""
    from accelerate.utils import send_to_device

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="unmem-bench-") as tmp:
        forget, retain = qa_records(args.world, Path(tmp))
    job = Job(model_name, "grad_diff", lora=False)
    model, tokenizer = load_job_model(job, args, forget + retain)
    data = role_examples(tokenizer, forget, retain)
    spec = get_method("grad_diff")
    cfg = spec.make_config()
    accelerator = _accelerator(args)
    stepper = Stepper(accelerator, model)
    old_optimizer = Stepper(
        accelerator, stepper.model, fused=False, prepared=True
    )  # same weights, a79c1f6's AdamW
    forward = MethodForward(spec, cfg, None, [], None, window=accepts_logits_to_keep(model))
    batches = step_batches(
        spec, spec.needs(cfg), data, tokenizer.pad_token_id, None, args.batch_size, args.batches
    )
    batches = [send_to_device(b, accelerator.device) for b in batches]
    losses, grads = [], []
    for loss_fn in (forward, two_pass_graddiff_loss):  # the same weights: no optimiser step here
        stepper.optimizer.zero_grad(set_to_none=True)
        loss, _ = loss_fn(stepper.model, batches[0])
        accelerator.backward(loss)
        losses.append(float(loss))
        grads.append(torch.cat([p.grad.flatten() for p in stepper.params]))
    stepper.optimizer.zero_grad(set_to_none=True)
    new_s, old_s, passes_s = [], [], []
    timed(stepper, forward, batches, 1, 0)  # warm-up: first steps allocate the optimiser state
    timed(old_optimizer, two_pass_graddiff_loss, batches, 1, 0)
    for _ in range(args.steps):  # alternate, so that load changes hit all alike
        new_s += timed(stepper, forward, batches, 0, 1)
        old_s += timed(old_optimizer, two_pass_graddiff_loss, batches, 0, 1)
        passes_s += timed(old_optimizer, forward, batches, 0, 1)
    return {
        "model": model_name,
        "batch": f"{args.batch_size} forget + {args.batch_size} retain",
        "loss_today": losses[0],
        "loss_two_pass": losses[1],
        "max_abs_grad_difference": float((grads[0] - grads[1]).abs().max()),
        "max_abs_grad": float(grads[1].abs().max()),
        "step_s_today": round(statistics.median(new_s), 4),
        "step_s_two_pass": round(statistics.median(old_s), 4),
        "speedup": round(statistics.median(old_s) / statistics.median(new_s), 3),
        # Today's passes with a79c1f6's AdamW: how much of the speed-up the passes alone give.
        "step_s_today_foreach_adamw": round(statistics.median(passes_s), 4),
        "speedup_passes_only": round(statistics.median(old_s) / statistics.median(passes_s), 3),
        "times_today": [round(t, 3) for t in new_s],
        "times_two_pass": [round(t, 3) for t in old_s],
        "load_average": uptime_load(),
    }


# ----------------------------------------------------------------------------- driver


def _run(target: Any, arguments: tuple, isolate: bool) -> Any:
    """``target(*arguments)``, in a fresh process when ``isolate`` (a clean peak RSS per job)."""
    if not isolate:
        return target(*arguments)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(target, arguments)


def _jobs(args: argparse.Namespace) -> list[Job]:
    methods = sorted(all_methods()) if args.methods == "all" else [m for m in args.methods.split(",") if m]
    models = list(args.models) + [f"config:{c}" for c in args.config_model]
    jobs = []
    for model in models:
        for lora in (False, True) if args.lora else (False,):
            for entry in methods:
                method, _, mode = entry.partition(":")
                if lora and get_method(method).prepare_model is not None:
                    continue  # EUL trains its own layers: no LoRA row
                jobs.append(Job(model, method, lora, mode or args.reference))
    return jobs


def _table(rows: list[dict[str, Any]], checks: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "model", "method", "step s", "tokens/s", "ceiling tokens/s", "ratio", "ratio 10 ep", "peak MB"
    )
    for row in rows:
        name = Path(row["model"]).name + (" LoRA" if row["lora"] else "")
        method = row["method"] + (" (live ref)" if row["reference"] == "live" else "")
        mfu = f" mfu {row['mfu']:.1%}" if "mfu" in row else ""
        table.add_row(
            name, method, f"{row['step_s']:.3f}", f"{row['tokens_per_s']:.0f}{mfu}",
            f"{row['ceiling_tokens_per_s']:.0f}", f"{row['ratio']:.2f}", f"{row['ratio_10ep']:.2f}",
            f"{row['method_peak_mb']:.0f}",
        )  # fmt: skip
    Console().print(table)
    for check in checks:
        Console().print(check)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=["small"], help="small and/or model directories")
    parser.add_argument(
        "--config-model", nargs="*", default=[], help="llama-1b or a config.json: random weights"
    )
    parser.add_argument("--config-tokenizer", default="runs/smollm2", help="tokenizer of --config-model")
    parser.add_argument(
        "--methods", default="all", help="comma-separated; METHOD:live runs the live reference"
    )
    parser.add_argument("--reference", default="cached", choices=["cached", "live"])
    parser.add_argument("--lora", action="store_true", help="also LoRA rows (default peft targets)")
    parser.add_argument("--lora-targets", nargs="*", default=None)
    parser.add_argument("--world", type=Path, help="world directory (default: generate the default world)")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="per role: forget B (+ retain B, + refusals B)"
    )
    parser.add_argument("--batches", type=int, default=2, help="distinct step batches, cycled")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (each batch shape once)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per phase; medians are reported")
    parser.add_argument(
        "--min-seconds", type=float, default=3.0, help="...and more until this long (small models)"
    )
    parser.add_argument(
        "--one-off-sample", type=int, default=64, help="examples per role timed for one-off work"
    )
    parser.add_argument("--two-pass", action="store_true", help="GradDiff today vs two passes (not small)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--peak-tflops", type=float, help="accelerator peak (dense) TFLOP/s, for MFU")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                        help="a process per job (default: on CPU, for a per-job peak RSS)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    isolate = args.device == "cpu" if args.isolate is None else args.isolate
    started, load_before = time.perf_counter(), uptime_load()
    models = list(args.models) + [f"config:{c}" for c in args.config_model]
    checks = [_run(two_pass_check, (m, args), isolate) for m in models if args.two_pass and m != "small"]
    rows = []
    for job in _jobs(args):
        rows.append(_run(measure, (job, args), isolate))
        _release(args.device)
        print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("times")}), flush=True)
    results = {
        "rows": rows,
        "two_pass": checks,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "load_before": load_before,
        "load_after": uptime_load(),
        "wall_s": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
    }
    if args.device.startswith("cuda"):
        results["machine"]["gpu"] = torch.cuda.get_device_name()
    _table(rows, checks)
    print(f"load average before / after: {load_before} / {results['load_after']}; wall {results['wall_s']} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(args.out)
    return results


if __name__ == "__main__":
    main()
