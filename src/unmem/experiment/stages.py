"""Stages of an experiment and ``state.json``, the record that lets an interrupted run resume."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from unmem.io import read_json, write_json

# Rough relative cost of each kind of stage, for the overall ETA.
STAGE_WEIGHT = {"data": 1, "model": 20, "eval": 2, "unlearn": 4, "report": 1}


@dataclass
class Stage:
    id: str  # unique key in state.json: "data", "models", "unlearn:npo-s0", "eval:npo-s0"
    kind: str  # data | model | eval | unlearn | report
    label: str
    run: Callable[[], bool]  # True if it did work (False: reused its output)


class StageLog:
    """state.json plus the overall progress line (rich.progress) printed before each stage.

    The line is printed, not live-refreshed, so it never fights with the per-step tqdm
    bars that training and evaluation draw underneath it.
    """

    def __init__(self, path: Path, stages: list[Stage], console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.path = path
        self.console = console
        self.state: dict[str, Any] = read_json(path) if path.is_file() else {}
        self.state.setdefault("stages", {})
        self.stages = stages
        self.total_weight = sum(STAGE_WEIGHT[s.kind] for s in stages)
        self.done_weight = 0.0
        self.worked_weight = 0.0  # weight of stages that did work in this process (for the ETA)
        self.worked_seconds = 0.0
        self.start = time.perf_counter()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("stages"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            TextColumn("{task.fields[stage]}"),
            console=console,
            auto_refresh=False,
        )
        self.task = self.progress.add_task("experiment", total=len(stages), eta="–", stage="")

    def record(self, stage_id: str) -> dict[str, Any]:
        return self.state["stages"].setdefault(stage_id, {})

    def save(self) -> None:
        self.state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        entries = self.state["stages"]
        self.state["done"] = sum(1 for s in self.stages if entries.get(s.id, {}).get("status") == "done")
        self.state["total"] = len(self.stages)
        write_json(self.path, self.state)

    def show(self, stage: Stage) -> None:
        remaining = self.total_weight - self.done_weight
        eta = "–"
        if self.worked_seconds >= 5:  # a few seconds of real work before extrapolating
            seconds = int(self.worked_seconds / self.worked_weight * remaining)
            eta = f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        self.progress.update(self.task, eta=eta, stage=f"→ {stage.label}")
        self.console.print(self.progress.get_renderable())

    def finish(
        self, stage: Stage, status: str, seconds: float, worked: bool, error: str | None = None
    ) -> None:
        entry = self.record(stage.id)
        entry.update({"kind": stage.kind, "label": stage.label, "status": status, "error": error})
        if worked:
            entry["seconds"] = round(seconds, 2)
            self.worked_seconds += seconds
            self.worked_weight += STAGE_WEIGHT[stage.kind]
        self.done_weight += STAGE_WEIGHT[stage.kind]
        self.progress.advance(self.task)
        self.save()
