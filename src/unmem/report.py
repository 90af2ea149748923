"""Results -> ``results.csv``, ``results_mean.csv``, ``report.md`` and a self-contained ``report.html``.

Run: ``unmem report runs/demo`` (one experiment) or ``unmem report runs/a runs/b --out cmp``.

Input is an experiment directory (``unmem run``'s ``--out``): its ``report_data.json``
lists the rows (target, retain, one per method run) and where their evaluation
(``eval/<row>/summary.json``, docs/data-format.md) and training (``runs/<row>/summary.json``,
``train_log.jsonl``) live. Without it the rows are collected from those folders.

Rows that differ only in the seed form one *variant*; the tables show its mean, and with
several seeds the 95% Student-t interval (:func:`unmem.metrics.stats.mean_ci`).
The retain model is the gold standard (it never saw the forget set); the target is
where unlearning starts. The HTML embeds its PNG plots as data URIs: it opens offline.

The report folder appears whole (built aside, then renamed into place) and replaces only
an earlier report: a folder holding anything besides the report's files is refused.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from unmem.errors import UnmemError
from unmem.io import (
    OUTPUT_MARKER,
    atomic_dir,
    exclusive_lock,
    is_unmem_output,
    mark_output,
    write_text_atomic,
)
from unmem.layout import EvalDir, ExperimentDir, RunDir
from unmem.metrics.stats import mean_ci
from unmem.results import EvalSummary, ReportData, ReportRow, RunSummary
from unmem.selection import FORGET_QUALITY, Candidate, Selection, select


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


# -- reading ---------------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
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
        loss = _finite(record.get("loss"))
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
        row.metrics = {k: _finite(v) for k, v in summary.metrics.items()}
    elif row.status == "done":
        row.status = "not evaluated"
    run = RunDir(root / report_row.run_dir) if report_row.run_dir else None
    if run is not None and run.summary.is_file():
        row.train = RunSummary.read(run.summary).model_dump()
        row.losses = _read_losses(run.train_log)
    pretrain = root / report_row.pretrain if report_row.pretrain else None
    if pretrain is not None and pretrain.is_file():  # target / retain trained here: the cost of retraining
        row.train = {"train_seconds": _finite(json.loads(pretrain.read_text()).get("train_seconds"))}
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


def _value(row: Row, column: str) -> float | None:
    if column in TRAIN_COLUMNS:
        return _finite(row.train.get(column))
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
            values = [v for v in (_value(r, column) for r in members) if v is not None]
            if not values:
                variant.mean[column] = variant.low[column] = variant.high[column] = None
                continue
            mean, low, high = mean_ci(values)
            variant.mean[column] = mean
            variant.low[column] = _finite(low)
            variant.high[column] = _finite(high)
        variants.append(variant)
    return variants


# -- formatting ------------------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    """Compact, finite-only: None / NaN / inf print as a dash."""
    value = _finite(value)
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


def _label(variant: Variant, several: bool) -> str:
    name = variant.label
    if variant.kind == "retain":
        name = "retain (gold standard)"
    elif variant.kind == "target":
        name = "target (start)"
    return f"{variant.experiment}: {name}" if several else name


def _status(variant: Variant) -> str:
    states = sorted({r.status for r in variant.rows})
    return ", ".join(states)


# -- files -----------------------------------------------------------------------------------------


def _csv_number(value: float | None) -> str:
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
            + [_csv_number(_value(row, c)) for c in (*columns, *TRAIN_COLUMNS)]
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
            cells += [_csv_number(v.mean.get(c)), _csv_number(v.low.get(c)), _csv_number(v.high.get(c))]
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
        label = _label(v, several)
        if v.kind in ("retain", "target"):
            label = f"**{label}**"
        if _status(v) != "done":
            label += f" ({_status(v)})"
        cells = [label, str(v.n), *(fmt_ci(v, c) for c in (*columns, *TRAIN_COLUMNS))]
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


# -- plots -----------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _colors(variants: Sequence[Variant]) -> dict[int, str]:
    palette = [
        "#4e79a7", "#f28e2b", "#76b7b2", "#b07aa1", "#edc948", "#9c755f",
        "#ff9da7", "#59a14f", "#bab0ac", "#86bcb6", "#d37295", "#a0cbe8",
    ]  # fmt: skip
    colors, index = {}, 0
    for i, v in enumerate(variants):
        if v.kind == "retain":
            colors[i] = "#2e7d32"
        elif v.kind == "target":
            colors[i] = "#c62828"
        else:
            colors[i] = palette[index % len(palette)]
            index += 1
    return colors


def _forget_quality_log10(variant: Variant) -> tuple[float | None, float | None, float | None]:
    if variant.mean.get("forget_quality_log10") is not None:
        return (
            variant.mean["forget_quality_log10"],
            variant.low.get("forget_quality_log10"),
            variant.high.get("forget_quality_log10"),
        )
    values = [r.metrics.get("forget_quality") for r in variant.rows]
    logs = [math.log10(v) for v in values if v is not None and v > 0]
    if not logs:
        return None, None, None
    mean, low, high = mean_ci(logs)
    return mean, _finite(low), _finite(high)


def pareto_plot(variants: Sequence[Variant], several: bool) -> str | None:
    """Forget quality (log10 p-value, up is better) against model utility (right is better)."""
    points = []
    colors = _colors(variants)
    for i, v in enumerate(variants):
        y, y_low, y_high = _forget_quality_log10(v)
        x = v.mean.get("model_utility")
        if x is not None and y is not None:
            points.append(
                (i, v, x, y, v.low.get("model_utility"), v.high.get("model_utility"), y_low, y_high)
            )
    if not points:
        return None
    fig, ax = _figure(7.5, 4.8)
    stacked: dict[tuple[int, int], int] = {}
    x0, y0 = min(p[2] for p in points), min(p[3] for p in points)
    x_span = (max(p[2] for p in points) - x0) or 1.0
    y_span = (max(p[3] for p in points) - y0) or 1.0
    for i, v, x, y, x_low, x_high, y_low, y_high in points:
        marker = {"retain": "*", "target": "X"}.get(v.kind, "o")
        size = 220 if v.kind != "method" else 70
        xerr = [[x - x_low], [x_high - x]] if x_low is not None and x_high is not None else None
        yerr = [[y - y_low], [y_high - y]] if y_low is not None and y_high is not None else None
        if xerr or yerr:
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="none", ecolor=colors[i], alpha=0.6, capsize=3)
        ax.scatter(
            [x], [y], s=size, marker=marker, color=colors[i], edgecolor="black", linewidth=0.6, zorder=3
        )
        spot = (round((x - x0) / x_span * 40), round((y - y0) / y_span * 40))  # same spot: stack labels
        stacked[spot] = stacked.get(spot, -1) + 1
        ax.annotate(
            _label(v, several),
            (x, y),
            textcoords="offset points",
            xytext=(6, 5 - 11 * stacked[spot]),
            fontsize=8,
        )
    # The Pareto front of the method runs: no other run is better on both axes.
    runs = sorted(((x, y) for _, v, x, y, *_ in points if v.kind == "method"), key=lambda p: (-p[0], -p[1]))
    front, best_y = [], -math.inf
    for x, y in runs:
        if y > best_y:
            front.append((x, y))
            best_y = y
    if len(front) > 1:
        xs, ys = zip(*sorted(front), strict=True)
        ax.plot(xs, ys, linestyle="--", color="grey", linewidth=1, zorder=1, label="Pareto front (methods)")
        ax.legend(loc="lower left", fontsize=8)
    ax.margins(x=0.15, y=0.1)  # room for the labels right of the points
    ax.set_xlabel("model utility  →  better")
    ax.set_ylabel("forget quality, log10 p-value  →  better")
    ax.set_title("Forgetting vs utility (retain ★ = gold standard, target ✕ = start)", fontsize=10)
    ax.grid(alpha=0.3)
    return _png(fig)


def bar_plot(variants: Sequence[Variant], column: str, several: bool) -> str | None:
    shown = [(i, v) for i, v in enumerate(variants) if v.mean.get(column) is not None]
    if not shown:
        return None
    colors = _colors(variants)
    fig, ax = _figure(3.9, 2.8)
    positions = range(len(shown))
    means = [v.mean[column] for _, v in shown]
    # Error bars only where seeds gave an interval (a one-seed bar gets none, not a zero-length cap).
    low = [
        m - v.low[column] if v.low.get(column) is not None else 0.0
        for m, (_, v) in zip(means, shown, strict=True)
    ]
    high = [
        v.high[column] - m if v.high.get(column) is not None else 0.0
        for m, (_, v) in zip(means, shown, strict=True)
    ]
    ax.bar(
        positions,
        means,
        yerr=[low, high] if any(low) or any(high) else None,
        color=[colors[i] for i, _ in shown],
        capsize=3,
        edgecolor="black",
        linewidth=0.4,
    )
    retain = next((v.mean[column] for _, v in shown if v.kind == "retain"), None)
    if retain is not None:
        ax.axhline(retain, color="#2e7d32", linestyle="--", linewidth=1)
    ax.set_xticks(list(positions))
    ax.set_xticklabels([_short(v, several) for _, v in shown], rotation=45, ha="right", fontsize=7)
    ax.set_title(column, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _short(variant: Variant, several: bool) -> str:
    label = {"retain": "retain", "target": "target"}.get(variant.kind, variant.label)
    return f"{variant.experiment}:{label}" if several else label


def loss_plot(variant: Variant, several: bool) -> str | None:
    runs = [r for r in variant.rows if r.losses]
    if not runs:
        return None
    fig, ax = _figure(3.9, 2.8)
    for row in runs:
        steps, losses = zip(*row.losses, strict=True)
        ax.plot(steps, losses, linewidth=1.2, label=f"seed {row.seed}" if row.seed is not None else row.id)
    if len(runs) > 1:
        ax.legend(fontsize=7)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(_short(variant, several), fontsize=10)
    ax.grid(alpha=0.3)
    return _png(fig)


# -- HTML ------------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 4px; } h2 { font-size: 1.15em; margin-top: 28px; }
.meta, .note { color: #555; font-size: 0.9em; }
.scroll { overflow-x: auto; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.82em; white-space: nowrap; }
th, td { padding: 4px 8px; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f5f5f5; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; position: sticky; left: 0; background: inherit; }
tr { background: #fff; }
thead th:first-child { background: #f5f5f5; z-index: 1; }
th.left, td.left { text-align: left; }
tr.retain { background: #e8f5e9; font-weight: 600; }
tr.target { background: #fdecea; }
tr.failed td { color: #999; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.grid img { border: 1px solid #eee; }
code { background: #f5f5f5; padding: 1px 4px; }
"""

# Marks the page for scripts/screenshot_report.py: every image decoded, no script errors.
CHECK_SCRIPT = """
(function () {
  var root = document.documentElement;
  window.addEventListener("error", function (event) {
    root.dataset.pageErrors = (root.dataset.pageErrors || "") + (event.message || "resource failed") + "; ";
  }, true);
  window.addEventListener("load", function () {
    var images = Array.prototype.slice.call(document.images);
    root.dataset.imagesOk = String(images.every(function (img) { return img.complete && img.naturalWidth > 0; }));
    root.dataset.imagesCount = String(images.length);
    root.dataset.pageHeight = String(document.documentElement.scrollHeight);
  });
})();
"""


def _img(data: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def render_html(
    variants: Sequence[Variant],
    columns: Sequence[str],
    title: str,
    meta: list[str],
    several: bool,
    notes: Sequence[str] = (),
) -> str:
    esc = html.escape
    head_cells = "".join(f"<th>{esc(c)}</th>" for c in ("row", "n", *columns, *TRAIN_COLUMNS))
    body = []
    for v in variants:
        classes = [v.kind] + (["failed"] if _status(v) != "done" else [])
        label = esc(_label(v, several))
        if _status(v) != "done":
            label += f' <span class="note">({esc(_status(v))})</span>'
        cells = "".join(
            f'<td title="{esc(_ci_title(v, c))}">{esc(fmt_ci(v, c))}</td>' for c in (*columns, *TRAIN_COLUMNS)
        )
        body.append(f'<tr class="{" ".join(classes)}"><td>{label}</td><td>{v.n}</td>{cells}</tr>')
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style><script>{CHECK_SCRIPT}</script></head><body>",
        f"<h1>{esc(title)}</h1>",
        "".join(f'<div class="meta">{esc(line)}</div>' for line in meta),
        "<h2>Results</h2>",
        '<p class="note">Green: the retain model, the gold standard (never trained on the forget set). '
        "Red: the target, where unlearning starts. Cells: mean over seeds, ± half the 95% confidence "
        f"interval when there are several seeds (hover for the interval); {DASH} = not computed.</p>",
        f'<div class="scroll"><table><thead><tr>{head_cells}</tr></thead><tbody>{"".join(body)}</tbody></table></div>',
        *(f'<p class="note">{esc(note)}</p>' for note in notes),
    ]
    pareto = _safe_plot(pareto_plot, variants, several)
    parts.append("<h2>Forgetting vs utility</h2>")
    parts.append(
        _img(pareto, "forget quality against model utility")
        if pareto
        else '<p class="note">Nothing to plot: needs forget_quality (a retain model) and model_utility '
        "(the tofu metric family).</p>"
    )
    bars = [(c, _safe_plot(bar_plot, variants, c, several)) for c in (*columns, *TRAIN_COLUMNS)]
    bars = [(c, b) for c, b in bars if b]
    if bars:
        parts.append("<h2>Per metric</h2>")
        if any(v.kind == "retain" for v in variants):
            parts.append('<p class="note">Dashed green line: the retain model.</p>')
        parts.append('<div class="grid">' + "".join(_img(b, c) for c, b in bars) + "</div>")
    losses = [(v, _safe_plot(loss_plot, v, several)) for v in variants if v.kind == "method"]
    losses = [(v, p) for v, p in losses if p]
    if losses:
        parts.append("<h2>Training loss</h2>")
        parts.append('<div class="grid">' + "".join(_img(p, v.label) for v, p in losses) + "</div>")
    if not _have_matplotlib():
        parts.append(
            '<p class="note">No plots: install matplotlib (<code>pip install matplotlib</code>).</p>'
        )
    parts.append("<h2>Runs</h2>")
    parts.append(_runs_table(variants, several))
    parts.append('<p class="note">Made by <code>unmem report</code>.</p></body></html>')
    return "\n".join(parts) + "\n"


def _ci_title(variant: Variant, column: str) -> str:
    low, high = variant.low.get(column), variant.high.get(column)
    if low is None or high is None:
        return f"n={variant.n}"
    return f"95% CI [{fmt(low)}, {fmt(high)}], n={variant.n}"


def _runs_table(variants: Sequence[Variant], several: bool) -> str:
    esc = html.escape
    rows = []
    for v in variants:
        for r in v.rows:
            if r.kind != "method":
                continue
            settings = ", ".join(f"{k}={json.dumps(val)}" for k, val in r.config.items())
            detail = r.error or r.train.get("stop_reason") or ""
            rows.append(
                f"<tr><td>{esc(_short(v, several))}</td><td>{esc(str(r.seed))}</td><td>{esc(r.status)}</td>"
                f"<td>{esc(str(r.train.get('steps', DASH)))}</td><td>{esc(fmt(_finite(r.train.get('train_seconds'))))}</td>"
                f'<td class="left">{esc(settings)}</td><td class="left">{esc(str(detail))}</td></tr>'
            )
    if not rows:
        return '<p class="note">No method runs.</p>'
    head = "".join(f"<th>{h}</th>" for h in ("run", "seed", "status", "steps", "seconds"))
    head += '<th class="left">settings</th><th class="left">notes</th>'
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _have_matplotlib() -> bool:
    from importlib.util import find_spec

    return find_spec("matplotlib") is not None


def _safe_plot(fn: Any, *args: Any) -> str | None:
    return fn(*args) if _have_matplotlib() else None


# -- entry points ----------------------------------------------------------------------------------


def terminal_table(
    variants: Sequence[Variant], columns: Sequence[str], several: bool, width: int = 120
) -> Table:
    """Means of as many leading metrics as fit ``width`` (the files hold every column and the CIs)."""
    labels = [_short(v, several) + ("" if _status(v) == "done" else f" ({_status(v)})") for v in variants]
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


REPORT_FILES = frozenset(
    {"results.csv", "results_mean.csv", "selection.csv", "report.md", "report.html", OUTPUT_MARKER}
)


def sweep_selections(variants: Sequence[Variant]) -> list[Selection]:
    """For every entry swept over a grid: the retain-free choice and the oracle's (``unmem.selection``)."""
    sweeps: dict[tuple[str, str], list[Variant]] = {}
    for v in variants:
        first = v.rows[0]
        if v.kind == "method" and first.grid:
            sweeps.setdefault((v.experiment, first.sweep or first.method or v.label), []).append(v)
    return [
        select(
            f"{experiment}: {sweep}" if experiment and len({e for e, _ in sweeps}) > 1 else sweep,
            [Candidate(v.label, v.rows[0].grid, v.mean) for v in members],
        )
        for (experiment, sweep), members in sweeps.items()
        if len(members) > 1
    ]


def selection_notes(selections: Sequence[Selection]) -> list[str]:
    lines = []
    for s in selections:
        line = f"sweep {s.sweep}: retain-free choice {s.chosen.variant} ({s.why})"
        if s.oracle is not None:
            line += (
                f"; forget quality {fmt(s.chosen.get(FORGET_QUALITY))} vs the oracle's "
                f"{fmt(s.oracle.get(FORGET_QUALITY))} ({s.oracle.variant})"
            )
        lines.append(line)
    return lines


def write_selection_csv(selections: Sequence[Selection], path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["sweep", "chosen", "chosen_forget_quality", "oracle", "oracle_forget_quality", "shortfall", "why"]
    )
    for s in selections:
        writer.writerow(
            [
                s.sweep,
                s.chosen.variant,
                _csv_number(s.chosen.get(FORGET_QUALITY)),
                "" if s.oracle is None else s.oracle.variant,
                _csv_number(None if s.oracle is None else s.oracle.get(FORGET_QUALITY)),
                _csv_number(s.shortfall),
                s.why,
            ]
        )
    return write_text_atomic(path, buffer.getvalue())


def check_report_output(out: Path) -> None:
    """A report replaces only an earlier report: never a run directory or a user's folder."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UnmemError(f"--out {out}: exists and is not a directory")
    other = sorted(p.name for p in out.iterdir() if p.name not in REPORT_FILES)
    if other:
        raise UnmemError(
            f"--out {out}: holds more than a report ({', '.join(other[:3])}); choose another --out"
        )


def build_report(
    run_dirs: Sequence[str | Path], out_dir: str | Path | None = None, *, console: Console | None = None
) -> Path:
    """Write results.csv, results_mean.csv, report.md and report.html; returns ``out_dir``.

    Several run directories make one comparison; rows are then prefixed with each
    experiment's name. ``out_dir`` defaults to ``RUN_DIR/report`` for a single one.
    """
    if not run_dirs:
        raise UnmemError("no run directory given")
    if out_dir is None:
        if len(run_dirs) > 1:
            raise UnmemError("several run directories: pass --out DIR for the combined report")
        out_dir = Path(run_dirs[0]) / "report"
    out = Path(out_dir)
    check_report_output(out)
    rows: list[Row] = []
    metas: list[ReportData] = []
    for run_dir in run_dirs:
        meta, found = collect(run_dir)
        metas.append(meta)
        rows.extend(found)
    several = len(run_dirs) > 1
    if several:
        names = [m.name for m in metas]
        if len(set(names)) < len(names):  # same experiment name twice: tell them apart by folder
            rows = []
            for meta, run_dir in zip(metas, run_dirs, strict=True):
                meta.name = f"{meta.name}@{Path(run_dir).name}"
                _, found = collect(run_dir)
                for row in found:
                    row.experiment = meta.name
                rows.extend(found)
    rows.sort(key=lambda r: KIND_ORDER.get(r.kind, 2) if not several else 0)
    columns = metric_columns(rows)
    variants = aggregate(rows, [*columns, *TRAIN_COLUMNS])
    title = "unlearning report: " + " vs ".join(m.name for m in metas)
    meta_lines = [
        f"{m.name}: {m.benchmark} {m.data or m.world or '?'}, split {m.split or '?'}, seeds {m.seeds or '?'}"
        for m in metas
    ]
    notes = [line for m in metas for line in report_notes(m, f"{m.name}: " if several else "")]
    selections = sweep_selections(variants)
    notes += selection_notes(selections)
    with exclusive_lock(out):
        check_report_output(out)
        if out.is_dir() and not is_unmem_output(out):
            mark_output(out)  # an earlier report from before the marker existed
        with atomic_dir(out, overwrite=True) as staging:
            write_csv(rows, columns, staging / "results.csv")
            write_mean_csv(variants, columns, staging / "results_mean.csv")
            if selections:
                write_selection_csv(selections, staging / "selection.csv")
            write_text_atomic(staging / "report.md", markdown(variants, columns, title, several, notes))
            html_page = render_html(variants, columns, title, meta_lines, several, notes)
            write_text_atomic(staging / "report.html", html_page)
    console = console or Console()
    console.print(terminal_table(variants, columns, several, console.width))
    for line in notes:
        console.print(line, highlight=False, soft_wrap=True)
    return out
