"""The training loop shared by unlearning and fine-tuning, top to bottom.

Per optimiser step: the step's batches (``batches``), the loss (``step_loss``: the
forward passes a method asked for, or plain NLL), backward, clip, step, log; every
``every`` steps each stopping rule measures the model; every ``checkpoint_every``
steps a resumable checkpoint. Everything else is a helper in this package.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from unmem.errors import UnmemError
from unmem.train.batches import BatchSchedule, Position, StepBatch, count_tokens
from unmem.train.checkpoints import Checkpoints, Progress

StepLoss = Callable[[torch.nn.Module, StepBatch], tuple[torch.Tensor, dict[str, float]]]


class StoppingRule(Protocol):
    name: str
    every: int

    def start(self, model: torch.nn.Module, state: dict[str, Any] | None) -> bool: ...
    def check(self, step: int, model: torch.nn.Module) -> tuple[dict[str, float], str | None, bool]: ...
    def state(self) -> dict[str, Any]: ...
    def summary(self, stop_reason: str) -> dict[str, Any]: ...


@dataclass
class Loop:
    """Everything the loop steps: prepared by accelerate, built by unlearn() or finetune()."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    schedule: BatchSchedule
    total_steps: int
    checkpoints: Checkpoints | None  # None: an in-memory run that writes nothing (no log, no checkpoint)
    grad_clip: float
    checkpoint_every: int | None = None
    stoppers: list[StoppingRule] = field(default_factory=list)
    desc: str = "train"  # names the run in the progress bar and in errors

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)


@dataclass
class LoopResult:
    progress: Progress
    stop_reason: str = "completed"
    last_logs: dict[str, float] = field(default_factory=dict)
    finished: bool = True  # False: ``stop_after_steps`` ended the process's work early


def _optimise(loop: Loop, step_loss: StepLoss, batch: StepBatch, step: int) -> tuple[float, dict]:
    with loop.accelerator.accumulate(loop.model):
        loss, logs = step_loss(loop.model, batch)
        # The loss is read here, where the method's logged floats already waited for the forward
        # pass; read after the optimiser step it would stall a GPU every step (and so would
        # counting tokens on it: batches carry their counts, see batches.with_layout).
        value = float(loss.detach())
        if not math.isfinite(value):
            last = loop.checkpoints.last() if loop.checkpoints is not None else None
            kept = f"; last good checkpoint: {last}" if last else ""
            raise UnmemError(
                f"{loop.desc}: loss became {value} at step {step}; "
                f"lower --lr or change hyper-parameters{kept}"
            )
        loop.accelerator.backward(loss)
        if loop.accelerator.sync_gradients:
            # FSDP replaces parameters while wrapping: clip the wrapped model's trainable ones.
            params = [p for p in loop.model.parameters() if p.requires_grad]
            loop.accelerator.clip_grad_norm_(params, loop.grad_clip)
        loop.optimizer.step()
        loop.scheduler.step()
        loop.optimizer.zero_grad(set_to_none=True)
    return value, logs


def _check_rules(loop: Loop, progress: Progress, record: dict[str, Any]) -> str | None:
    """Run the stopping rules due at this step; returns the first reason to stop."""
    reason = None
    for rule in loop.stoppers:
        if progress.step % rule.every and progress.step < loop.total_steps:
            continue
        fields, why, best = rule.check(progress.step, loop.unwrapped)
        record.update(fields)
        if best:
            loop.checkpoints.save_selected(loop.unwrapped, progress.step)
        reason = reason or why
        progress.stopping[rule.name] = rule.state()
    return reason


def _sync_tokens(loop: Loop, progress: Progress, local: int) -> None:
    """Add every process's tokens since the last sync to the run's total (a collective)."""
    device = loop.accelerator.device
    progress.tokens += int(loop.accelerator.reduce(torch.tensor(local, device=device), reduction="sum"))


def run_loop(
    loop: Loop, step_loss: StepLoss, start: Progress | None, stop_after_steps: int | None = None
) -> LoopResult:
    """Train from ``start`` (a resumed checkpoint's progress, or None) to the end or a stop."""
    progress = start or Progress()
    for rule in loop.stoppers:
        if rule.start(loop.unwrapped, progress.stopping.get(rule.name)):
            loop.checkpoints.save_selected(loop.unwrapped, 0)
        progress.stopping[rule.name] = rule.state()
    result = LoopResult(progress)
    local_tokens = (
        0  # this process's, since the last sync (a sum over processes per step would cost a collective)
    )
    clock = time.perf_counter() - progress.seconds
    bar = tqdm(total=loop.total_steps, initial=progress.step, desc=loop.desc, unit="step", disable=None)
    loop.model.train()
    log = loop.checkpoints.log_path.open("a", encoding="utf-8") if loop.checkpoints is not None else None
    with log if log is not None else contextlib.nullcontext() as log_file:
        while progress.step < loop.total_steps and result.stop_reason == "completed":
            for position, batch in loop.schedule.epoch(progress.position.epoch, progress.position):
                loss, logs = _optimise(loop, step_loss, batch, progress.step)
                local_tokens += count_tokens(batch)
                progress.position = position
                if not loop.accelerator.sync_gradients:
                    continue
                progress.step += 1
                result.last_logs = {"loss": loss, **logs}
                progress.seconds = time.perf_counter() - clock
                record = {
                    "step": progress.step,
                    "epoch": position.epoch,
                    "lr": loop.scheduler.get_last_lr()[0],
                }
                record |= result.last_logs | {"seconds": round(progress.seconds, 3)}
                result.stop_reason = _check_rules(loop, progress, record) or "completed"
                if log_file is not None and loop.accelerator.is_main_process:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                bar.update()
                bar.set_postfix({k: f"{v:.3g}" for k, v in list(result.last_logs.items())[:3]})
                if loop.checkpoint_every and progress.step % loop.checkpoint_every == 0:
                    _sync_tokens(loop, progress, local_tokens)
                    local_tokens = 0
                    loop.checkpoints.save(progress)
                if stop_after_steps is not None and progress.step >= stop_after_steps:
                    bar.close()
                    result.finished = False
                    return result
                if progress.step >= loop.total_steps or result.stop_reason != "completed":
                    break
            else:
                progress.position = Position(epoch=progress.position.epoch + 1)
    bar.close()
    progress.seconds = time.perf_counter() - clock
    _sync_tokens(loop, progress, local_tokens)
    return result
