"""The report's rows: one per evaluated model, read from an experiment folder, and grouped
into variants (rows of one setting over seeds) with means and 95% intervals."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unmem.errors import UnmemError
from unmem.layout import EvalDir, ExperimentDir, RunDir
from unmem.metrics.stats import mean_ci
from unmem.results import EvalSummary, ReportData, ReportRow, RunSummary


def headline_metrics() -> list[str]:
    """Shown first, in this order, when present (each metric family's headline); others follow
    alphabetically."""
    from unmem.evaluation import headline_metrics as registered

    return registered()


# published_step: the step whose weights a run published (a stopping rule may pick an earlier one)
TRAIN_COLUMNS = ("published_step", "train_seconds", "peak_memory_mb")
TERMINAL_COLUMNS = 6  # metric columns in the terminal table (the files hold them all)
DASH = "–"
KIND_ORDER = {"target": 0, "retain": 1, "method": 2}


@dataclass
class Row:
    """One evaluated model: the target, the retain model, or one method run (one seed)."""

    id: str
    kind: str  # target | retain | method
    variant: str  # rows sharing (experiment, variant) are seeds of one setting
    experiment: str = ""
    method: str | None = None
    seed: int | None = None
    status: str = "done"
    error: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    sweep: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)


@dataclass
class Variant:
    """Rows of one setting over seeds: mean and 95% interval per column."""

    label: str
    kind: str
    experiment: str
    rows: list[Row]
    mean: dict[str, float | None] = field(default_factory=dict)
    low: dict[str, float | None] = field(default_factory=dict)
    high: dict[str, float | None] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.rows)


def finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _read_losses(path: Path) -> list[tuple[int, float]]:
    if not path.is_file():
        return []
    points = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of an interrupted log
        loss = finite(record.get("loss"))
        if loss is not None and isinstance(record.get("step"), int):
            points.append((record["step"], loss))
    return points


def _fill(row: Row, root: Path, report_row: ReportRow) -> Row:
    """Metrics from the row's evaluation summary, training cost and losses from its run."""
    # A failed row shows no numbers, even where an earlier run of it left an evaluation.
    if (
        row.status != "failed"
        and report_row.eval_dir
        and EvalDir(root / report_row.eval_dir).summary.is_file()
    ):
        summary = EvalSummary.read(EvalDir(root / report_row.eval_dir).summary)
        row.metrics = {k: finite(v) for k, v in summary.metrics.items()}
    elif row.status == "done":
        row.status = "not evaluated"
    run = RunDir(root / report_row.run_dir) if report_row.run_dir else None
    if run is not None and run.summary.is_file():
        row.train = RunSummary.read(run.summary).model_dump()
        row.losses = _read_losses(run.train_log)
    pretrain = root / report_row.pretrain if report_row.pretrain else None
    if pretrain is not None and pretrain.is_file():  # target / retain trained here: the cost of retraining
        row.train = {"train_seconds": finite(json.loads(pretrain.read_text()).get("train_seconds"))}
    return row


def _scan(root: Path) -> ReportData:
    """report_data.json for a folder without one (older or hand-made): eval/<row>/ and runs/<row>/."""
    evals = sorted(p.parent.name for p in root.glob("eval/*/summary.json"))
    if not evals:
        raise UnmemError(
            f"{root}: nothing to report (no report_data.json and no eval/*/summary.json); "
            "pass the --out folder of `unmem run`"
        )
    layout = ExperimentDir(root)
    rows = []
    for name in sorted(evals, key=lambda n: (KIND_ORDER.get(n, 2), n)):
        kind = name if name in ("target", "retain") else "method"
        seed_match = re.search(r"-s(\d+)$", name)
        run = layout.run(name)
        rows.append(
            ReportRow.model_validate(
                {
                    "id": name,
                    "kind": kind,
                    "variant": name[: seed_match.start()] if seed_match and kind == "method" else name,
                    "method": RunSummary.read(run.summary).method if run.summary.is_file() else None,
                    "seed": int(seed_match.group(1)) if seed_match else None,
                    "eval_dir": layout.relative(layout.eval(name).root),
                    "run_dir": layout.relative(run.root),
                }
            )
        )
    return ReportData(name=root.name, rows=rows)


def collect(run_dir: str | Path) -> tuple[ReportData, list[Row]]:
    """The experiment's metadata and rows, from report_data.json or by scanning its folders."""
    root = Path(run_dir)
    if not root.is_dir():
        raise UnmemError(f"{root}: run directory not found")
    layout = ExperimentDir(root)
    data = ReportData.read(layout.report_data) if layout.report_data.is_file() else _scan(root)
    name = data.name or root.name
    rows = [
        _fill(
            Row(
                id=r.id,
                kind=r.kind,
                variant=r.label,
                experiment=name,
                method=r.method,
                seed=r.seed,
                status=r.status,
                error=r.error,
                config=r.config,
                grid=r.grid,
                sweep=r.sweep,
            ),
            root,
            r,
        )
        for r in data.rows
    ]
    return data, rows


def metric_columns(rows: Iterable[Row]) -> list[str]:
    """Every metric id some row has, the well-known ones first."""
    names: set[str] = set()
    for row in rows:
        names.update(row.metrics)
    preferred = headline_metrics()
    return [m for m in preferred if m in names] + sorted(names - set(preferred))


def cell_value(row: Row, column: str) -> float | None:
    if column in TRAIN_COLUMNS:
        return finite(row.train.get(column))
    return row.metrics.get(column)


def aggregate(rows: Sequence[Row], columns: Sequence[str]) -> list[Variant]:
    """Group rows by (experiment, variant) in first-seen order; mean and 95% CI over seeds."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.experiment, row.variant), []).append(row)
    variants = []
    for (experiment, label), members in groups.items():
        variant = Variant(label=label, kind=members[0].kind, experiment=experiment, rows=members)
        for column in columns:
            values = [v for v in (cell_value(r, column) for r in members) if v is not None]
            if not values:
                variant.mean[column] = variant.low[column] = variant.high[column] = None
                continue
            mean, low, high = mean_ci(values)
            variant.mean[column] = mean
            variant.low[column] = finite(low)
            variant.high[column] = finite(high)
        variants.append(variant)
    return variants
