"""``build_report``: collect the rows, write every file of the report folder atomically, print
the terminal table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from unmem.errors import UnmemError
from unmem.io import (
    OUTPUT_MARKER,
    atomic_dir,
    exclusive_lock,
    is_unmem_output,
    mark_output,
    write_text_atomic,
)
from unmem.report import robustness
from unmem.report.page import render_html
from unmem.report.rows import KIND_ORDER, TRAIN_COLUMNS, Row, aggregate, collect, metric_columns
from unmem.report.selection import selection_notes, sweep_selections, write_selection_csv
from unmem.report.sequence import (
    SEQUENCE_FILE,
    read_sequence,
    sequence_html,
    sequence_markdown,
    sequence_notes,
    write_sequence_csv,
)
from unmem.report.tables import markdown, report_notes, terminal_table, write_csv, write_mean_csv
from unmem.results import ReportData

REPORT_FILES = frozenset(
    {
        "results.csv",
        "results_mean.csv",
        "selection.csv",
        SEQUENCE_FILE,
        "report.md",
        "report.html",
        OUTPUT_MARKER,
    }
)


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
    main = robustness.main_columns(columns)  # the audit's per-attack columns get their own section
    variants = aggregate(rows, [*columns, *TRAIN_COLUMNS])
    title = "unlearning report: " + " vs ".join(m.name for m in metas)
    meta_lines = [
        f"{m.name}: {m.benchmark} {m.data or m.world or '?'}, split {m.split or '?'}, seeds {m.seeds or '?'}"
        for m in metas
    ]
    notes = [line for m in metas for line in report_notes(m, f"{m.name}: " if several else "")]
    selections = sweep_selections(variants)
    notes += selection_notes(selections)
    sequence = read_sequence(run_dirs[0]) if not several else None  # an experiment with `requests:`
    with exclusive_lock(out):
        check_report_output(out)
        if out.is_dir() and not is_unmem_output(out):
            mark_output(out)  # an earlier report from before the marker existed
        with atomic_dir(out, overwrite=True) as staging:
            write_csv(rows, columns, staging / "results.csv")
            write_mean_csv(variants, columns, staging / "results_mean.csv")
            if selections:
                write_selection_csv(selections, staging / "selection.csv")
            page = markdown(variants, main, title, several, notes)
            page += robustness.markdown_section(variants, columns, several)
            extra = robustness.html_section(variants, columns, several)
            if sequence is not None:
                write_sequence_csv(sequence, staging / SEQUENCE_FILE)
                page += sequence_markdown(sequence)
                extra += sequence_html(sequence)
            write_text_atomic(staging / "report.md", page)
            html_page = render_html(variants, main, title, meta_lines, several, notes, extra)
            write_text_atomic(staging / "report.html", html_page)
    console = console or Console()
    console.print(terminal_table(variants, main, several, console.width))
    for line in [*notes, *(sequence_notes(sequence) if sequence is not None else [])]:
        console.print(line, highlight=False, soft_wrap=True)
    return out
