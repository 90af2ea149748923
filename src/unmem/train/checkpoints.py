"""Checkpoints of a running job in ``OUT.work/``: save, prune, and resume only the same run.

``OUT.work/run.json`` records what produced the checkpoints (the model's and data files'
hashes, the resolved config). A later call resumes from the last complete checkpoint
only when its own record is the same; otherwise it refuses, naming the difference,
because resuming another run's weights would publish them under the new run's config.
Each checkpoint's ``progress.json`` holds the position in the data, the tokens and
seconds spent so far (so the summary counts the whole run) and the stopping rule's state.
"""

from __future__ import annotations

import errno
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from unmem.errors import UnmemError
from unmem.io import atomic_dir, read_json, write_json
from unmem.train.batches import Position

RUN_FILE = "run.json"
PROGRESS_FILE = "progress.json"
SELECTED = "selected"  # the stopping rule's chosen weights
# Settings that change how a run is kept, not what it computes: a resume may change them.
BOOKKEEPING = frozenset({"checkpoint_every", "keep_checkpoints", "device", "reference_cache"})


@dataclass
class Progress:
    """The state of a run after ``step`` optimiser steps."""

    step: int = 0
    position: Position = field(default_factory=Position)
    tokens: int = 0
    seconds: float = 0.0
    stopping: dict[str, Any] = field(default_factory=dict)  # each stopping rule's state, by name

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        return cls(
            step=data["step"],
            position=Position(**data["position"]),
            tokens=data.get("tokens", 0),
            seconds=data.get("seconds", 0.0),
            stopping=data.get("stopping", {}),
        )


def _difference(old: Any, new: Any, path: str = "") -> str | None:
    """The first place where two JSON values differ, as 'path old -> new'."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = _difference(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    return None if old == new else f"{path or 'record'} {old!r} -> {new!r}"


class Checkpoints:
    """The work folder of one output directory (``OUT.work``)."""

    def __init__(self, out_dir: Path, accelerator: Accelerator, keep: int) -> None:
        self.work = out_dir.with_name(out_dir.name + ".work")
        self.accelerator = accelerator
        self.keep = keep

    @property
    def log_path(self) -> Path:
        return self.work / "train_log.jsonl"

    def _complete(self) -> list[Path]:
        folders = sorted(
            (self.work / "checkpoints").glob("step-*"), key=lambda p: int(p.name.removeprefix("step-"))
        )
        return [folder for folder in folders if (folder / PROGRESS_FILE).is_file()]

    def last(self) -> Path | None:
        complete = self._complete()
        return complete[-1] if complete else None

    def start(self, record: dict[str, Any], resume: bool) -> Progress | None:
        """Prepare the work folder; returns the progress to resume from, or None to start afresh."""
        run_file = self.work / RUN_FILE
        if self.work.exists() and not (run_file.is_file() or (self.work / "checkpoints").is_dir()):
            raise UnmemError(f"{self.work}: exists but was not written by unmem; move it away and retry")
        last = self.last() if resume and run_file.is_file() else None
        progress = None
        if last is not None:
            difference = _difference(read_json(run_file), record)
            if difference:
                raise UnmemError(
                    f"{self.work}: holds checkpoints of another run ({difference}); "
                    "pass --restart to discard them and start afresh"
                )
            progress = Progress.from_json(read_json(last / PROGRESS_FILE))
        self.accelerator.wait_for_everyone()  # every process has looked before the main one changes it
        if self.accelerator.is_main_process:
            if progress is None and self.work.exists():
                shutil.rmtree(self.work)
            self.work.mkdir(parents=True, exist_ok=True)
            write_json(run_file, record)
            if progress is not None:
                self._truncate_log(progress.step)
        self.accelerator.wait_for_everyone()
        if last is not None:
            self.accelerator.load_state(str(last))
        return progress

    def _truncate_log(self, step: int) -> None:
        """Drop log lines written after the checkpoint: the resumed run writes them again."""
        if self.log_path.is_file():
            lines = self.log_path.read_text().splitlines()
            kept = [line for line in lines if json.loads(line)["step"] <= step]
            self.log_path.write_text("".join(line + "\n" for line in kept))

    def save(self, progress: Progress) -> None:
        target = self.work / "checkpoints" / f"step-{progress.step}"
        try:
            self.accelerator.save_state(str(target))
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            shutil.rmtree(target, ignore_errors=True)
            last = self.last()
            kept = f"the last complete checkpoint {last} is kept" if last else "no checkpoint was complete"
            raise UnmemError(
                f"{self.work}: no space left on the device while saving step {progress.step}; {kept}; "
                "free space and re-run the same command to resume"
            ) from None
        if self.accelerator.is_main_process:
            write_json(target / PROGRESS_FILE, progress.to_json())
            for old in self._complete()[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)

    def save_selected(self, model: torch.nn.Module, step: int) -> None:
        """Keep the trainable weights of the point a stopping rule selects (never pruned)."""
        if not self.accelerator.is_main_process:
            return
        weights = {
            name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad
        }
        with atomic_dir(self.work / SELECTED, overwrite=True) as staging:
            save_file(weights, staging / "weights.safetensors")
            write_json(staging / "selected.json", {"step": step})

    def load_selected(self, model: torch.nn.Module) -> int:
        """Put the selected point's weights back into ``model``; returns its step."""
        folder = self.work / SELECTED
        weights = load_file(folder / "weights.safetensors")
        device = next(model.parameters()).device
        model.load_state_dict({k: v.to(device) for k, v in weights.items()}, strict=False)
        return int(read_json(folder / "selected.json")["step"])

    def remove(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def run_record(
    *, config: dict[str, Any], method_config: dict[str, Any] | None, hashes: dict[str, str | None]
) -> dict[str, Any]:
    """What must match for a resume: input hashes and every setting that changes the result."""
    settings = {k: v for k, v in config.items() if k not in BOOKKEEPING}
    return {"inputs": hashes, "config": settings, "method_config": method_config}
