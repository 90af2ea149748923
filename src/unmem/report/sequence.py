"""The sequence view: an experiment with ``requests:`` (``sequence.json``), request by request.

Per method run: model utility, general perplexity and forget quality (against the retain
model trained without the union of the requests so far) after each request, and each
earlier request's own forget probability as later requests pile up. A request counts as
*still forgotten* after request k when its forget probability is at most ``HELD`` × what
it was right after its own request (issue 18's bar: 10%).

Files: ``sequence.csv`` (one row per run and request) and a section of report.md / report.html.
"""

from __future__ import annotations

import csv
import html
import io
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unmem.report.plots import _figure, _png, have_matplotlib
from unmem.report.rows import DASH
from unmem.report.tables import fmt
from unmem.results import SequenceData, SequenceRun, SequenceStep

SEQUENCE_FILE = "sequence.csv"
HELD = 1.1  # an earlier request is still forgotten while its forget probability stays <= 1.1x its own
UTILITY_BAR = 0.9  # model utility after the last request >= 0.9x the target's
CSV_METRICS = ("model_utility", "general_ppl", "forget_quality", "forget_prob", "mia_loss_auc")


def read_sequence(run_dir: str | Path) -> SequenceData | None:
    path = Path(run_dir) / "sequence.json"
    return SequenceData.read(path) if path.is_file() else None


def own_probs(run: SequenceRun) -> dict[str, float]:
    """Request j -> its forget probability right after request j."""
    return {
        str(step.k): step.per_request[str(step.k)]["prob"]  # type: ignore[misc]
        for step in run.steps
        if (step.per_request.get(str(step.k)) or {}).get("prob") is not None
    }


HONOURED = ("honoured", "retrained")


def worst_held(run: SequenceRun, step: SequenceStep) -> tuple[float | None, str | None]:
    """The largest ratio, over earlier honoured requests j < k, of j's forget probability now to
    right after j (a refused request was never forgotten: it has no such ratio)."""
    own = own_probs(run)
    honoured = {str(s.k) for s in run.steps if s.outcome in HONOURED}
    ratios = {
        j: values["prob"] / own[j]
        for j, values in step.per_request.items()
        if int(j) < step.k and j in honoured and values.get("prob") is not None and own.get(j)
    }
    if not ratios:
        return None, None
    j = max(ratios, key=lambda key: ratios[key])
    return ratios[j], j


def summary_rows(data: SequenceData) -> list[dict[str, Any]]:
    """One row per run: where it stands after the last request, against issue 18's bars."""
    target = data.target.metrics if data.target else {}
    rows = []
    for run in data.runs:
        if not run.steps:
            continue
        last = run.steps[-1]
        ratio, worst = worst_held(run, last)
        utility = last.metrics.get("model_utility")
        rows.append(
            {
                "run": run.name,
                "mode": run.mode,
                "requests": f"{last.k}",
                "honoured": sum(s.outcome in HONOURED for s in run.steps),
                "utility / target": _ratio(utility, target.get("model_utility")),
                "general ppl / target": _ratio(last.metrics.get("general_ppl"), target.get("general_ppl")),
                "forget quality per request": " ".join(
                    fmt(s.metrics.get("forget_quality")) for s in run.steps
                ),
                "earlier: worst prob ratio": f"{fmt(ratio)} (request {worst})" if ratio is not None else DASH,
                "median s / request": _median([s.seconds for s in run.steps]),
                "median steps / request": _median([s.steps for s in run.steps]),
                "utility ok": _bar(utility, target.get("model_utility")),
                "earlier forgotten": _held(run, ratio),
            }
        )
    return rows


def _median(values: list[Any]) -> str:
    numbers = [v for v in values if v is not None]
    return fmt(statistics.median(numbers)) if numbers else DASH


def _held(run: SequenceRun, ratio: float | None) -> str:
    """Issue 18's bar: every request honoured, and none back above HELD x its forget probability."""
    refused = [str(s.k) for s in run.steps if s.outcome not in HONOURED]
    if refused:
        return f"no: request {', '.join(refused)} not honoured"
    return DASH if ratio is None else ("yes" if ratio <= HELD else "no")


def _ratio(value: float | None, reference: float | None) -> str:
    return fmt(value / reference) if value is not None and reference else DASH


def _bar(utility: float | None, target: float | None) -> str:
    if utility is None or not target:
        return DASH
    return "yes" if utility >= UTILITY_BAR * target else "no"


def write_sequence_csv(data: SequenceData, path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "run",
            "mode",
            "k",
            "outcome",
            "version",
            "seconds",
            "steps",
            "stop_step",
            *CSV_METRICS,
            "earlier_worst_prob_ratio",
        ]
    )
    for run in data.runs:
        for step in run.steps:
            ratio, _ = worst_held(run, step)
            values = [step.metrics.get(m) for m in CSV_METRICS]
            writer.writerow(
                [
                    run.name,
                    run.mode,
                    step.k,
                    step.outcome,
                    step.version,
                    step.seconds,
                    step.steps,
                    step.stop_step,
                    *values,
                    ratio,
                ]
            )
    from unmem.io import write_text_atomic

    write_text_atomic(path, buffer.getvalue())


def sequence_markdown(data: SequenceData) -> str:
    rows = summary_rows(data)
    if not rows:
        return ""
    head = list(rows[0])
    lines = [
        "",
        f"## Deletion requests, one after another ({len(data.requests)})",
        "",
        "Each run after its last request; forget quality after each request is against the retain model "
        f"trained without the requests so far; an earlier request is still forgotten while its forget "
        f"probability stays within {HELD}x of its value right after its own request.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
        *("| " + " | ".join(str(row[key]) for key in head) + " |" for row in rows),
    ]
    lines += [f"- {metric}: {why}" for metric, why in data.not_computed.items()]
    return "\n".join(lines) + "\n"


def sequence_html(data: SequenceData) -> str:
    """The section of report.html: the summary table and the plots against the request number."""
    esc = html.escape
    rows = summary_rows(data)
    if not rows:
        return ""
    head = "".join(f"<th>{esc(k)}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row.values()) + "</tr>" for row in rows
    )
    parts = [
        f"<h2>Deletion requests, one after another ({len(data.requests)})</h2>",
        '<p class="note">Each run after its last request. Forget quality after each request is against the '
        "retain model trained without the requests so far. An earlier request is still forgotten while its "
        f"forget probability stays within {HELD}x of its value right after its own request.</p>",
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>',
    ]
    plots = [p for p in sequence_plots(data) if p[1]]
    if plots:
        images = "".join(
            f'<img src="data:image/png;base64,{png}" alt="{esc(title)}">' for title, png in plots
        )
        parts.append(f'<div class="grid">{images}</div>')
    return "\n".join(parts)


def sequence_plots(data: SequenceData) -> list[tuple[str, str | None]]:
    if not have_matplotlib() or not data.runs:
        return []
    target = data.target.metrics if data.target else {}
    plots = [
        ("model utility", _metric_plot(data, "model_utility", target.get("model_utility"), UTILITY_BAR)),
        ("general perplexity", _metric_plot(data, "general_ppl", target.get("general_ppl"), None)),
        ("forget quality", _metric_plot(data, "forget_quality", None, None, log=True)),
    ]
    plots += [
        (f"{run.name}: each request's forget probability", _earlier_plot(run, data)) for run in data.runs
    ]
    return plots


def _metric_plot(
    data: SequenceData, metric: str, target: float | None, bar: float | None, log: bool = False
) -> str | None:
    runs = [(run, [(s.k, s.metrics.get(metric)) for s in run.steps]) for run in data.runs]
    runs = [(run, [(k, v) for k, v in points if v is not None]) for run, points in runs]
    runs = [(run, points) for run, points in runs if points]
    if not runs:
        return None
    fig, ax = _figure(4.6, 3.2)
    for i, (run, points) in enumerate(runs):
        ks, values = zip(*points, strict=True)
        ax.plot(ks, values, marker="o", markersize=3, linewidth=1.2, color=f"C{i % 10}", label=run.name)
    if target is not None:
        ax.axhline(target, color="#c62828", linestyle="--", linewidth=1, label="target")
        if bar is not None:
            ax.axhline(bar * target, color="#c62828", linestyle=":", linewidth=1, label=f"{bar}x target")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("request")
    ax.set_title(
        metric + (" (vs the union's retain model)" if metric == "forget_quality" else ""), fontsize=9
    )
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    return _png(fig)


def _earlier_plot(run: SequenceRun, data: SequenceData) -> str | None:
    """One line per request j: its forget probability after requests j, j+1, ..., and the target's."""
    lines: dict[str, list[tuple[int, float]]] = {}
    for step in run.steps:
        for j, values in step.per_request.items():
            if values.get("prob") is not None:
                lines.setdefault(j, []).append((step.k, values["prob"]))
    if not lines:
        return None
    fig, ax = _figure(4.6, 3.2)
    target = data.target.per_request if data.target else {}
    for i, (j, points) in enumerate(sorted(lines.items(), key=lambda item: int(item[0]))):
        ks, values = zip(*points, strict=True)
        ax.plot(ks, values, marker="o", markersize=3, linewidth=1, color=f"C{i % 10}", label=f"request {j}")
        before = (target.get(j) or {}).get("prob")
        if before is not None:
            ax.scatter([int(j)], [before], marker="x", color=f"C{i % 10}", s=18)
    ax.set_xlabel("after request")
    ax.set_ylabel("forget probability")
    ax.set_title(f"{run.name} ({run.mode}): each request, later on (x: the target)", fontsize=9)
    ax.legend(fontsize=5, ncol=2)
    ax.grid(alpha=0.3)
    return _png(fig)


def sequence_notes(data: SequenceData) -> Sequence[str]:
    """One line per run for the terminal."""
    return [
        f"{row['run']}: after request {row['requests']}, utility {row['utility / target']}x the target's, "
        f"earlier requests' worst forget-probability ratio {row['earlier: worst prob ratio']}"
        for row in summary_rows(data)
    ]
