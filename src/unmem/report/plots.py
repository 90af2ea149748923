"""PNG plots for the HTML page (base64 strings): forgetting vs utility, one bar chart per
metric, training loss per variant. matplotlib is optional: without it there are no plots."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

from unmem.metrics.stats import mean_ci
from unmem.report.rows import Variant, finite
from unmem.report.tables import row_label, short_label


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
    return mean, finite(low), finite(high)


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
            row_label(v, several),
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
    ax.set_xticklabels([short_label(v, several) for _, v in shown], rotation=45, ha="right", fontsize=7)
    ax.set_title(column, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


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
    ax.set_title(short_label(variant, several), fontsize=10)
    ax.grid(alpha=0.3)
    return _png(fig)


def have_matplotlib() -> bool:
    from importlib.util import find_spec

    return find_spec("matplotlib") is not None


def safe_plot(fn: Any, *args: Any) -> str | None:
    return fn(*args) if have_matplotlib() else None
