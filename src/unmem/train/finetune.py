"""Teach a pretrained causal LM some facts: the step before unlearning a real model.

The benchmark needs a *target* that knows the forget set and a *retain* model that
never saw it. For the built-in world, ``unmem train`` builds both from scratch; for a
pretrained model (SmolLM2, Llama, ...) this module fine-tunes it instead, on QA pairs
(``question``/``answer``, prompted the way ``unmem unlearn`` and ``unmem eval`` prompt:
the chat template when the tokenizer has one) and/or passages (``text``).

Run (docs/real-models.md has the whole recipe)::

    unmem finetune --model models/smollm2 --data world/qa/retain90.jsonl \\
        --data world/qa/forget10.jsonl --out models/smollm2-target --lora --epochs 10 --lr 1e-3

With ``--lora`` the adapter is merged into the weights by default (``--no-merge``
keeps the adapter and names its base in ``unmem_model.json``), so the output is a
plain model directory that ``unmem unlearn`` can take as its ``--model``. The loop is
plain accelerate, so ``accelerate launch -m unmem finetune ...`` runs it data-parallel.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import Accelerator
from pydantic import Field, ValidationError

from unmem.config import TrainingSettings, describe_validation_error
from unmem.data.collate import Example, PromptFormat, encode_qa, encode_text
from unmem.errors import UnmemError, input_error
from unmem.io import atomic_dir, exclusive_lock, hash_files, read_records, write_json
from unmem.models import MODEL_CARD, count_parameters, model_hash, resolve_model_dir
from unmem.train.batches import BatchSchedule, Phase, example_loader
from unmem.train.checkpoints import Checkpoints, run_record
from unmem.train.forward import nll_step
from unmem.train.loop import Loop, LoopResult, run_loop
from unmem.train.output import assert_finite
from unmem.train.setup import (
    check_output,
    deepspeed_batch_size,
    load_policy,
    lora_from,
    make_accelerator,
    optimizer_and_schedule,
    peak_memory_mb,
)

RECORD = "finetune.json"  # written with the model: data, settings, loss and speed


class FinetuneConfig(TrainingSettings):
    """Hyper-parameters of a fine-tune. Defaults suit LoRA on a ~100M-1B model learning a few hundred facts."""

    lora_r: int = Field(16, gt=0)
    lora_alpha: int = Field(32, gt=0)
    merge: bool = True  # merge the LoRA adapter into the weights on save
    lr: float = Field(2e-4, gt=0)  # LoRA memorises faster at ~1e-3; full fine-tuning wants ~1e-5
    epochs: int = Field(3, gt=0)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, lt=1)


def build_finetune_config(values: dict[str, Any]) -> FinetuneConfig:
    try:
        return FinetuneConfig(**values)
    except ValidationError as exc:
        raise UnmemError(f"finetune: {describe_validation_error(exc)}") from None


def read_training_data(paths: list[str | Path]) -> dict[Path, list[dict[str, Any]]]:
    """Records of every file, each a `text` passage or a `question`/`answer` pair (else: file and line)."""
    data: dict[Path, list[dict[str, Any]]] = {}
    for path in paths:
        rows = read_records(path)
        for number, record in enumerate(rows, start=1):
            is_text = isinstance(record.get("text"), str) and record["text"]
            is_qa = isinstance(record.get("question"), str) and isinstance(record.get("answer"), str)
            if not (is_text or is_qa):
                line = number if Path(path).suffix == ".jsonl" else None
                raise input_error(
                    path, "expected a `text` passage or a `question` and an `answer` (strings)", line=line
                )
        data[Path(path).resolve()] = rows
    return data


def encode_examples(
    data: dict[Path, list[dict[str, Any]]], tokenizer: Any, fmt: PromptFormat, max_length: int
) -> list[Example]:
    return [
        encode_text(tokenizer, record["text"], max_length=max_length)
        if isinstance(record.get("text"), str) and record["text"]
        else encode_qa(tokenizer, record["question"], record["answer"], fmt, max_length=max_length)
        for rows in data.values()
        for record in rows
    ]


def finetune(
    model_dir: str | Path,
    data_paths: list[str | Path],
    out_dir: str | Path,
    config: FinetuneConfig,
    *,
    overwrite: bool = False,
    resume: bool = True,
) -> Path:
    """Fine-tune the model in ``model_dir`` on ``data_paths``; returns the output model directory."""
    if not data_paths:
        raise UnmemError("no training data: pass --data FILE (repeatable)")
    inputs = {"model": Path(model_dir)} | {f"data file {i + 1}": Path(p) for i, p in enumerate(data_paths)}
    out = check_output(out_dir, inputs, overwrite)
    model_path = resolve_model_dir(model_dir).resolve()
    records = read_training_data(data_paths)
    accelerator = make_accelerator(config)
    lock = exclusive_lock(out) if accelerator.is_main_process else contextlib.nullcontext()
    with lock:
        model, tokenizer = load_policy(config, model_path)
        fmt = PromptFormat.for_tokenizer(tokenizer, config.chat_template)
        examples = encode_examples(records, tokenizer, fmt, config.max_length)
        checkpoints = Checkpoints(out, accelerator, config.keep_checkpoints)
        loop = _loop(model, examples, tokenizer.pad_token_id, config, accelerator, checkpoints, "finetune")
        hashes = {"model": model_hash(model_path)} | {str(p): hash_files([p]) for p in records}
        start = checkpoints.start(
            run_record(config=config.model_dump(mode="json"), method_config=None, hashes=hashes), resume
        )
        result = run_loop(loop, nll_step, start)
        info = {
            "base_model": str(model_path),
            "data": {str(path): len(rows) for path, rows in records.items()},
            "examples": len(examples),
            "config": config.model_dump(mode="json"),
            "chat_template": fmt.chat,
            "trainable_parameters": sum(p.numel() for p in loop.model.parameters() if p.requires_grad),
        }
        _save(loop, result, tokenizer, config, model_path, out, overwrite, info)
    return out


def _loop(
    model: torch.nn.Module,
    examples: list[Example],
    pad_token_id: int,
    config: FinetuneConfig,
    accelerator: Accelerator,
    checkpoints: Checkpoints | None,
    desc: str,
) -> Loop:
    """The prepared loop of a fine-tune: LoRA if asked, batches, AdamW and the schedule."""
    model = lora_from(model, config) if config.lora else model
    trainable = [p for p in model.parameters() if p.requires_grad]
    loader = example_loader(examples, config.batch_size, config.seed, pad_token_id, accelerator)
    schedule = BatchSchedule(accelerator, [Phase(loader, "data")], config.grad_accum)
    total_steps = schedule.steps_per_epoch * config.epochs
    optimizer, scheduler = optimizer_and_schedule(trainable, config, total_steps, accelerator)
    deepspeed_batch_size(accelerator, config.batch_size)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    return Loop(
        accelerator,
        model,
        optimizer,
        scheduler,
        schedule,
        total_steps,
        checkpoints,
        config.grad_clip,
        checkpoint_every=config.checkpoint_every,
        desc=desc,
    )


def finetune_in_memory(
    model: torch.nn.Module, tokenizer: Any, records: list[dict[str, Any]], config: FinetuneConfig, desc: str
) -> dict[str, Any]:
    """Fine-tune ``model`` itself on ``records`` (QA pairs and/or ``text`` passages) with the loop
    ``finetune`` runs, writing nothing: no checkpoint, no log, no output folder. The caller owns the
    model (the robustness audit's relearning attacks pass a copy). ``config.lora`` is refused here:
    peft would leave its adapter layers in the caller's model. Returns the run's cost and final loss."""
    if config.lora:
        raise UnmemError("finetune_in_memory trains the model it is given; LoRA would leave adapters in it")
    if config.checkpoint_every is not None:
        raise UnmemError("finetune_in_memory writes no checkpoints; leave checkpoint_every unset")
    accelerator = make_accelerator(config)
    fmt = PromptFormat.for_tokenizer(tokenizer, config.chat_template)
    examples = encode_examples({Path(desc): records}, tokenizer, fmt, config.max_length)
    loop = _loop(model, examples, tokenizer.pad_token_id, config, accelerator, None, desc)
    result = run_loop(loop, nll_step, None)
    loop.unwrapped.eval()
    return {
        "steps": result.progress.step,
        "examples": len(examples),
        "tokens": result.progress.tokens,
        "train_seconds": round(result.progress.seconds, 3),
        "final_loss": result.last_logs.get("loss"),
    }


def _save(
    loop: Loop,
    result: LoopResult,
    tokenizer: Any,
    config: FinetuneConfig,
    base: Path,
    out: Path,
    overwrite: bool,
    info: dict[str, Any],
) -> None:
    """The model (LoRA merged unless asked not to) with ``finetune.json``: data, settings, speed."""
    accelerator = loop.accelerator
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(loop.model)
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return
    trained = loop.unwrapped
    assert_finite(trained, "finetune", loop.checkpoints.last())
    trained.config.use_cache = True  # gradient checkpointing turned it off for training only
    progress = result.progress
    info |= {
        "steps": progress.step,
        "epochs": _epoch_losses(loop.checkpoints.log_path),
        "train_seconds": round(progress.seconds, 2),
        "tokens": progress.tokens,
        "tokens_per_second": round(progress.tokens / max(progress.seconds, 1e-9), 1),
        "peak_memory_mb": round(peak_memory_mb(accelerator.device), 1),
        "processes": accelerator.num_processes,
    }
    with atomic_dir(out, overwrite=overwrite) as staging:
        tokenizer.save_pretrained(staging)
        if config.lora and config.merge:
            trained = trained.merge_and_unload()
            trained.save_pretrained(staging)
        elif config.lora:
            trained.save_pretrained(staging, state_dict=state_dict)
            write_json(staging / MODEL_CARD, {"kind": "lora", "base_model": str(base)})
        else:
            trained.save_pretrained(staging, state_dict=state_dict)
        info["parameters"] = count_parameters(trained)
        write_json(staging / RECORD, info)
    loop.checkpoints.remove()
    accelerator.wait_for_everyone()


def _epoch_losses(log_path: Path) -> list[dict[str, Any]]:
    """Mean loss and last step of every epoch, from the step log."""
    by_epoch: dict[int, list[dict[str, Any]]] = {}
    for line in log_path.read_text().splitlines():
        row = json.loads(line)
        by_epoch.setdefault(row["epoch"], []).append(row)
    return [
        {"epoch": epoch, "mean_loss": sum(r["loss"] for r in rows) / len(rows), "step": rows[-1]["step"]}
        for epoch, rows in sorted(by_epoch.items())
    ]
