"""Stages of an experiment and ``state.json``, the record that lets an interrupted run resume
and says what an edited experiment file changed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from rich.console import Console

from unmem.errors import UnmemError
from unmem.evaluation.cache import base_model
from unmem.experiment.loader import Experiment
from unmem.io import first_difference, read_json, write_json

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


# What a stage's key holds besides settings, as the reason says it.
UPSTREAM = {
    "target": "its target model changed",
    "model": "its model changed",
    "retain": "the retain model changed",
    "data": "the data changed",
    "v": "a new evaluation version",
}


def describe_change(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """What differs between the inputs a stage's output was made from and those of now."""
    if old is None:
        return "made by an older unmem, which did not record its settings"
    difference = first_difference(old, new) or "other inputs"
    top = difference.split(" ", 1)[0].split(".", 1)[0]
    return UPSTREAM.get(top) or difference.removeprefix("config.")


def only_new_defaults(old: Any, new: Any, settings: Any = None) -> bool:
    """Whether the inputs ``new`` equal the recorded ``old`` but for settings ``old`` lacks that
    ``new`` has at their default: settings added to unmem since ``old`` was recorded, which the stage
    ran without, and so as their default does. ``settings``: the pydantic settings ``new`` was
    dumped from (a model, or a dict of models by input name); only their fields can be new."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return old == new
    if set(old) - set(new):
        return False
    for key, value in new.items():
        if key in old:
            if not only_new_defaults(old[key], value, _settings_part(settings, key)):
                return False
        elif not _at_default(settings, key, value):
            return False
    return True


def _settings_part(settings: Any, key: str) -> BaseModel | None:
    part = settings.get(key) if isinstance(settings, dict) else getattr(settings, key, None)
    return part if isinstance(part, BaseModel) else None


def _at_default(settings: Any, key: str, value: Any) -> bool:
    field = type(settings).model_fields.get(key) if isinstance(settings, BaseModel) else None
    if field is None or field.is_required():
        return False
    return to_jsonable_python(field.get_default(call_default_factory=True)) == value


def changed_error(out: Path, source: Path | None, changes: dict[str, str]) -> UnmemError:
    stage, why = next(iter(changes.items()))
    more = f" and {len(changes) - 1} more stage(s)" if len(changes) > 1 else ""
    return UnmemError(
        f"{out}: {source.name if source else 'the experiment'} changed since the last run there: "
        f"{stage} ({why}){more}; pass --overwrite to redo what changed (and nothing else), "
        "or choose another --out"
    )


def experiment_inputs(exp: Experiment) -> dict[str, Path | None]:
    """What an experiment reads and never writes: given data and models (with their base models)."""
    paths: dict[str, Path | None] = {
        "data": exp.benchmark.data_dir,
        "lm-eval tasks": exp.config.eval.lm_eval_tasks,
    }
    models = [("target model", exp.models.target)]
    models += [(f"retain model {i + 1}", path) for i, path in enumerate(exp.models.retains)]
    for name, path in models:
        if path is not None:
            paths[name] = path
            paths[f"{name}'s base"] = base_model(path)
    return paths
