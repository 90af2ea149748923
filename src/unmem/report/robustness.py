"""The robustness audit's view (the ``robustness`` metric family): forget quality and forget
probability before and after every attack, R and Q, per variant, in report.md and report.html,
with one plot per method. The main table keeps only the audit's summary columns
(``robust_forget_quality`` ...); results.csv keeps every column."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from unmem.evaluation.attacks.base import all_attacks
from unmem.evaluation.families.robustness import PREFIX, ROBUSTNESS, SUMMARY_IDS
from unmem.report.plots import _png, safe_plot
from unmem.report.rows import Variant
from unmem.report.tables import fmt_ci, row_label, short_label

BEFORE = {"forget_quality": "forget_quality", "forget_prob": "forget_prob"}  # the tofu family's


def is_attack_metric(column: str) -> bool:
    """A per-attack column of the audit (shown in this view, not in the main table)."""
    return column.startswith(PREFIX) and column not in SUMMARY_IDS


def main_columns(columns: Sequence[str]) -> list[str]:
    return [c for c in columns if not is_attack_metric(c)]


def attacks_in(columns: Sequence[str]) -> list[str]:
    """The attacks the rows were audited with, in the registry's order (unknown ones last)."""
    suffix = "_forget_prob"
    present = {
        c[len(PREFIX) : -len(suffix)]
        for c in columns
        if c.startswith(PREFIX) and c.endswith(suffix) and c not in SUMMARY_IDS
    }
    known = [name for name in all_attacks() if name in present]
    return known + sorted(present - set(known))


def _tables(attacks: list[str], columns: Sequence[str]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(title, [(header, column)]) of the view's tables."""
    half = f"{PREFIX}relearn_forget_forget_"
    tables = []
    for metric, title in (
        (
            "forget_quality",
            "Forget quality (KS p against the retain model under the same attack; higher = better)",
        ),
        ("forget_prob", "Forget probability (lower = better)"),
    ):
        cells = [("no attack", BEFORE[metric])]
        if f"{half}{metric}_before" in columns:
            cells.append(("relearn_forget: its half, before", f"{half}{metric}_before"))
        cells += [(name, f"{PREFIX}{name}_{metric}") for name in attacks]
        worst = "robust_forget_quality" if metric == "forget_quality" else "robust_forget_prob"
        cells.append(("worst", worst))
        tables.append((title, [(h, c) for h, c in cells if c in columns]))
    kinds = all_attacks()
    robustness = [
        (f"{name}: {ROBUSTNESS[kinds[name].kind]}", f"{PREFIX}{name}_{ROBUSTNESS[kinds[name].kind]}")
        for name in attacks
        if name in kinds and kinds[name].kind in ROBUSTNESS
    ]
    robustness += [("lowest R", "robust_R"), ("lowest Q", "robust_Q")]
    tables.append(("Robustness R (relearning) and Q (quantization); 1 = nothing came back", robustness))
    return [(title, [(h, c) for h, c in cells if c in columns]) for title, cells in tables]


def markdown_section(variants: Sequence[Variant], columns: Sequence[str], several: bool) -> str:
    attacks = attacks_in(columns)
    if not attacks:
        return ""
    lines = ["", "## Robustness audit", ""]
    for title, cells in _tables(attacks, columns):
        if not cells:
            continue
        lines += [f"**{title}**", "", "| row | " + " | ".join(h for h, _ in cells) + " |"]
        lines.append("|---|" + "---:|" * len(cells))
        for v in variants:
            lines.append(f"| {row_label(v, several)} | " + " | ".join(fmt_ci(v, c) for _, c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def html_section(variants: Sequence[Variant], columns: Sequence[str], several: bool) -> str:
    attacks = attacks_in(columns)
    if not attacks:
        return ""
    esc = html.escape
    parts = [
        "<h2>Robustness audit</h2>",
        '<p class="note">Every attack scored again with the forget metrics (docs/robustness.md): '
        "forget quality compares with the retain model under the same attack.</p>",
    ]
    for title, cells in _tables(attacks, columns):
        if not cells:
            continue
        head = "".join(f"<th>{esc(h)}</th>" for h in ("row", *(h for h, _ in cells)))
        body = "".join(
            f'<tr class="{v.kind}"><td>{esc(row_label(v, several))}</td>'
            + "".join(f"<td>{esc(fmt_ci(v, c))}</td>" for _, c in cells)
            + "</tr>"
            for v in variants
        )
        parts.append(f'<p class="note">{esc(title)}</p>')
        parts.append(
            f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
        )
    plots = [
        (v, safe_plot(attack_plot, v, variants, attacks, several)) for v in variants if v.kind == "method"
    ]
    plots = [(v, p) for v, p in plots if p]
    if plots:
        parts.append(
            '<p class="note">Per method: its forget probability and forget quality after each attack '
            "(bars), before any (dashed), and the retain model (green) and target (red) under the same attack.</p>"
        )
        parts.append(
            '<div class="grid">'
            + "".join(
                f'<img src="data:image/png;base64,{p}" alt="{esc(v.label)}: robustness audit">'
                for v, p in plots
            )
            + "</div>"
        )
    return "\n".join(parts)


def _log10(value: float | None) -> float | None:
    return math.log10(value) if value is not None and value > 0 else None


def attack_plot(
    variant: Variant, variants: Sequence[Variant], attacks: list[str], several: bool
) -> str | None:
    """Forget probability and log10 forget quality of one method after each attack."""
    retain = next((v for v in variants if v.kind == "retain"), None)
    target = next((v for v in variants if v.kind == "target"), None)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.8, 3.0), dpi=100, layout="constrained")
    axes = fig.subplots(1, 2)
    positions = list(range(len(attacks)))
    for ax, metric, before, transform, label in (
        (axes[0], "forget_prob", "forget_prob", lambda x: x, "forget probability ↓"),
        (axes[1], "forget_quality", "forget_quality", _log10, "forget quality, log10 ↑"),
    ):
        values = [transform(variant.mean.get(f"{PREFIX}{a}_{metric}")) for a in attacks]
        ax.bar(
            positions,
            [0 if v is None else v for v in values],
            color="#4e79a7",
            edgecolor="black",
            linewidth=0.4,
        )
        start = transform(variant.mean.get(before))
        if start is not None:
            ax.axhline(start, color="black", linestyle="--", linewidth=1)
        for other, color, marker in ((retain, "#2e7d32", "o"), (target, "#c62828", "x")):
            if other is None:
                continue
            points = [(i, transform(other.mean.get(f"{PREFIX}{a}_{metric}"))) for i, a in enumerate(attacks)]
            points = [(i, y) for i, y in points if y is not None]
            if points:
                ax.scatter(*zip(*points, strict=True), color=color, marker=marker, zorder=3, s=25)
        ax.set_xticks(positions)
        ax.set_xticklabels(attacks, rotation=60, ha="right", fontsize=6)
        ax.set_title(label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(short_label(variant, several), fontsize=10)
    return _png(fig)
