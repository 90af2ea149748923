"""Tables: number formatting, the CSV files, report.md and the terminal table."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from unmem.io import write_text_atomic
from unmem.report.rows import DASH, TERMINAL_COLUMNS, TRAIN_COLUMNS, Row, Variant, cell_value, finite
from unmem.results import ReportData


def fmt(value: float | None) -> str:
    """Compact, finite-only: None / NaN / inf print as a dash."""
    value = finite(value)
    if value is None:
        return DASH
    if value == 0:
        return "0"
    magnitude = abs(value)
    if value.is_integer() and magnitude < 1e6:  # step counts, and whole-number means of them
        return str(int(value))
    if magnitude < 1e-3 or magnitude >= 1e6:
        return f"{value:.2e}"
    if magnitude >= 100:
        return f"{value:.1f}"
    return f"{value:.3g}"


def fmt_ci(variant: Variant, column: str) -> str:
    mean, low, high = variant.mean.get(column), variant.low.get(column), variant.high.get(column)
    if mean is None:
        return DASH
    if low is None or high is None:
        return fmt(mean)
    return f"{fmt(mean)} ± {fmt((high - low) / 2)}"


def row_label(variant: Variant, several: bool) -> str:
    name = variant.label
    if variant.kind == "retain":
        name = "retain (gold standard)"
    elif variant.kind == "target":
        name = "target (start)"
    return f"{variant.experiment}: {name}" if several else name


def status_text(variant: Variant) -> str:
    states = sorted({r.status for r in variant.rows})
    return ", ".join(states)


def short_label(variant: Variant, several: bool) -> str:
    label = {"retain": "retain", "target": "target"}.get(variant.kind, variant.label)
    return f"{variant.experiment}:{label}" if several else label


def csv_number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def write_csv(rows: Sequence[Row], columns: Sequence[str], path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["experiment", "row", "kind", "method", "variant", "seed", "status", *columns, *TRAIN_COLUMNS]
    )
    for row in rows:
        writer.writerow(
            [
                row.experiment,
                row.id,
                row.kind,
                row.method or "",
                row.variant,
                "" if row.seed is None else row.seed,
                row.status,
            ]
            + [csv_number(cell_value(row, c)) for c in (*columns, *TRAIN_COLUMNS)]
        )
    return write_text_atomic(path, buffer.getvalue())


def write_mean_csv(variants: Sequence[Variant], columns: Sequence[str], path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    stats = [f"{c}{suffix}" for c in (*columns, *TRAIN_COLUMNS) for suffix in ("", "_ci_low", "_ci_high")]
    writer.writerow(["experiment", "variant", "kind", "n", *stats])
    for v in variants:
        cells = []
        for c in (*columns, *TRAIN_COLUMNS):
            cells += [csv_number(v.mean.get(c)), csv_number(v.low.get(c)), csv_number(v.high.get(c))]
        writer.writerow([v.experiment, v.label, v.kind, v.n, *cells])
    return write_text_atomic(path, buffer.getvalue())


def report_notes(data: ReportData, prefix: str = "") -> list[str]:
    """Report-level lines: the noise floor of forget quality, and why a metric is empty everywhere."""
    lines = []
    floor = data.noise_floor
    if floor is not None:
        lines.append(
            f"{prefix}noise floor of forget quality (KS p between the {len(floor.models)} retain models, "
            f"{len(floor.pairs)} pairs): median {fmt(floor.median)}, min {fmt(floor.min)}; "
            "retraining itself scores in this range"
        )
    lines += [f"{prefix}{metric} not computed: {why}" for metric, why in data.not_computed.items()]
    return lines


def markdown(
    variants: Sequence[Variant], columns: Sequence[str], title: str, several: bool, notes: Sequence[str] = ()
) -> str:
    head = ["row", "n", *columns, *TRAIN_COLUMNS]
    lines = [
        f"# {title}",
        "",
        "Retain = gold standard (never trained on the forget set); target = the model unlearning starts from.",
        "Cells: mean over seeds, ± half the 95% confidence interval when there are several; "
        f"{DASH} = not computed.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|",
    ]
    for v in variants:
        label = row_label(v, several)
        if v.kind in ("retain", "target"):
            label = f"**{label}**"
        if status_text(v) != "done":
            label += f" ({status_text(v)})"
        cells = [label, str(v.n), *(fmt_ci(v, c) for c in (*columns, *TRAIN_COLUMNS))]
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def terminal_table(
    variants: Sequence[Variant], columns: Sequence[str], several: bool, width: int = 120
) -> Table:
    """Means of as many leading metrics as fit ``width`` (the files hold every column and the CIs)."""
    labels = [
        short_label(v, several) + ("" if status_text(v) == "done" else f" ({status_text(v)})")
        for v in variants
    ]
    label_width = max(len(label) for label in labels)
    used = label_width + 4 + 4 + len("stop step") + len("train_seconds") + 6 + 1  # row, n, train columns
    shown = []
    for column in [c for c in columns if c != "forget_quality_log10"][:TERMINAL_COLUMNS]:
        used += max(len(column), 8) + 3
        if used > width:
            break
        shown.append(column)
    table = Table(
        title="unlearning results",
        caption="means over seeds; every metric with 95% CIs: report.md / report.html",
    )
    table.add_column("row", no_wrap=True, min_width=label_width)
    table.add_column("n", justify="right", no_wrap=True)
    for column in (*shown, "published_step", "train_seconds"):
        table.add_column(column.replace("published_step", "stop step"), justify="right", no_wrap=True)
    for v, label in zip(variants, labels, strict=True):
        style = {"retain": "green", "target": "red"}.get(v.kind)
        table.add_row(
            label,
            str(v.n),
            *(fmt(v.mean.get(c)) for c in (*shown, "published_step", "train_seconds")),
            style=style,
        )
    return table
