"""Sweeps: the retain-free choice of each swept entry next to the oracle's (``unmem.selection``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from unmem.io import write_text_atomic
from unmem.report.rows import Variant
from unmem.report.tables import csv_number, fmt
from unmem.selection import FORGET_QUALITY, Candidate, Selection, select


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
                csv_number(s.chosen.get(FORGET_QUALITY)),
                "" if s.oracle is None else s.oracle.variant,
                csv_number(None if s.oracle is None else s.oracle.get(FORGET_QUALITY)),
                csv_number(s.shortfall),
                s.why,
            ]
        )
    return write_text_atomic(path, buffer.getvalue())
