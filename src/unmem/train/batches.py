"""Which batches each optimiser step sees, in an order that depends only on (seed, epoch).

A run is a sequence of epochs; an epoch is one or more *phases* (EUL alternates a
retain-only and a forget-only phase; every other method and fine-tuning have one).
Each step gets a ``StepBatch``: the collated batch of every role it needs (``forget``,
``retain``, ``idk``, or ``data`` when fine-tuning). Because the order is a function of
(seed, epoch), a run resumed at (epoch, phase, batch) sees exactly what an
uninterrupted one would.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from unmem.data.collate import Example, collate
from unmem.logprobs import IGNORE_INDEX

StepBatch = dict[str, dict[str, Any]]  # role -> collated batch


@dataclass(frozen=True)
class Position:
    """Where a run stands: ``batch`` batches of phase ``phase`` of epoch ``epoch`` are done."""

    epoch: int = 0
    phase: int = 0
    batch: int = 0


@dataclass
class Phase:
    """One pass over ``loader``; a ``companion`` loader is cycled alongside, one batch per step."""

    loader: DataLoader
    role: str | None  # None: the loader already yields {role: batch}
    companion: DataLoader | None = None
    companion_role: str = "retain"
    limit: int | None = None  # at most this many batches per epoch (the first of the epoch's order)

    @property
    def batches(self) -> int:
        return len(self.loader) if self.limit is None else min(self.limit, len(self.loader))


def make_loader(
    items: Sequence[Any],
    batch_size: int,
    seed: int,
    collate_fn: Callable[[list[Any]], Any],
    accelerator: Accelerator,
) -> DataLoader:
    """A shuffled loader, sharded across processes by accelerate (seedable sampler)."""
    loader = DataLoader(
        items,  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate_fn,
        # Page-locked batches copy to a GPU asynchronously (the accelerator is made non_blocking).
        pin_memory=accelerator.device.type == "cuda",
    )
    return accelerator.prepare(loader)


def label_start(batch: dict[str, Any]) -> int:
    """The first shifted label column any row of the batch uses (logits before it are never read).

    ``with_layout`` stores it when collating, so that the loop reads a plain int instead of
    syncing with the accelerator; without it, it is computed here.
    """
    if "label_start" in batch:
        return int(batch["label_start"])
    labels = batch["labels"][:, 1:]
    columns = (labels != IGNORE_INDEX).any(0).nonzero()
    return int(columns[0]) if len(columns) else labels.shape[1]


def with_layout(batch: dict[str, Any]) -> dict[str, Any]:
    """Add, as plain ints computed on the CPU, what the loop would otherwise sync for:
    ``label_start`` (see ``label_start``) and ``n_tokens`` (real tokens)."""
    batch["label_start"] = label_start(batch)
    batch["n_tokens"] = int(batch["attention_mask"].sum())
    return batch


def example_loader(
    examples: Sequence[Example], batch_size: int, seed: int, pad_token_id: int, accelerator: Accelerator
) -> DataLoader:
    return make_loader(examples, batch_size, seed, lambda b: collate(b, pad_token_id), accelerator)


class BatchSchedule:
    """The epochs of a run as phases of batches; see the module docstring."""

    def __init__(self, accelerator: Accelerator, phases: list[Phase], grad_accum: int) -> None:
        self.accelerator = accelerator
        self.phases = phases
        self.grad_accum = grad_accum

    @property
    def steps_per_epoch(self) -> int:
        # Prepared loaders are sharded: under N processes each sees 1/N of the batches.
        return sum(math.ceil(phase.batches / self.grad_accum) for phase in self.phases)

    def epoch(self, epoch: int, start: Position) -> Iterator[tuple[Position, StepBatch]]:
        """(position after the batch, batch) for the rest of ``epoch`` from ``start``."""
        for phase in self.phases:
            for loader in (phase.loader, phase.companion):
                if loader is not None:
                    loader.set_epoch(epoch)
        for number, phase in enumerate(self.phases):
            if number < start.phase:
                continue
            skip = start.batch if number == start.phase else 0
            batches = self.accelerator.skip_first_batches(phase.loader, skip) if skip else phase.loader
            companion = None
            if phase.companion is not None:
                # The k-th batch of an epoch always pairs with companion batch (k mod n).
                companion = self._cycle(phase.companion, skip % len(phase.companion))
            for done, batch in enumerate(itertools.islice(batches, phase.batches - skip), start=skip + 1):
                step_batch = dict(batch) if phase.role is None else {phase.role: batch}
                if companion is not None:
                    step_batch[phase.companion_role] = next(companion)
                yield Position(epoch, number, done), step_batch

    def _cycle(self, loader: DataLoader, skip: int) -> Iterator[dict[str, Any]]:
        yield from self.accelerator.skip_first_batches(loader, skip) if skip else loader
        while True:
            yield from loader


def count_tokens(batch: StepBatch) -> int:
    """Real (unpadded) tokens of the batches that train the policy's answers."""
    return sum(
        b["n_tokens"] if "n_tokens" in b else int(b["attention_mask"].sum())
        for role, b in batch.items()
        if role != "idk"
    )
