"""Report from fabricated evaluation summaries and training logs: tables, CI over seeds, HTML, Chromium."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unmem.cli import app
from unmem.report import Row, aggregate, build_report, fmt

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _metrics(fq: float, mu: float, extra: float) -> dict:
    return {
        "forget_quality": fq,
        "forget_quality_log10": math.log10(fq),
        "model_utility": mu,
        "forget_prob": 0.5 * extra,
        "forget_rouge": extra,
        "privleak": -50.0 * extra,
        "knowmem_forget": None,  # not computed: must print as a dash, not break the means
    }


def fabricate(root: Path, name: str = "fab", seeds: tuple[int, ...] = (0, 1, 2)) -> Path:
    """An experiment folder as `unmem run` leaves it: report_data.json, eval/, runs/."""
    rows = []
    for kind, fq, mu in (("target", 1e-12, 0.62), ("retain", 1.0, 0.60)):
        _write(root / "eval" / kind / "summary.json", {"model": kind, "metrics": _metrics(fq, mu, 0.9)})
        rows.append({"id": kind, "kind": kind, "variant": kind, "eval_dir": f"eval/{kind}", "run_dir": None})
    for method, base_fq, base_mu in (("ga", 1e-3, 0.30), ("npo", 0.05, 0.55)):
        for seed in seeds:
            run = f"{method}-s{seed}"
            scale = 1 + 0.1 * seed
            _write(
                root / "eval" / run / "summary.json",
                {"metrics": _metrics(base_fq * scale, base_mu * scale, 0.2 * scale)},
            )
            _write(
                root / "runs" / run / "summary.json",
                {"method": method, "train_seconds": 10.0 + seed, "peak_memory_mb": 300.0, "steps": 5},
            )
            log = "".join(
                json.dumps({"step": step, "epoch": 0, "loss": 2.0 - 0.3 * step * scale}) + "\n"
                for step in range(1, 6)
            )
            (root / "runs" / run / "train_log.jsonl").write_text(log)
            rows.append(
                {
                    "id": run,
                    "kind": "method",
                    "variant": method,
                    "method": method,
                    "seed": seed,
                    "config": {"lr": 1e-3, "method_args": {}},
                    "eval_dir": f"eval/{run}",
                    "run_dir": f"runs/{run}",
                }
            )
    _write(root / "report_data.json", {"name": name, "split": "forget10", "seeds": list(seeds), "rows": rows})
    return root


def test_report_files_have_every_row_with_finite_numbers(tmp_path):
    out = build_report([fabricate(tmp_path / "exp")], tmp_path / "rep")
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["row"] for r in rows] == [
        "target",
        "retain",
        "ga-s0",
        "ga-s1",
        "ga-s2",
        "npo-s0",
        "npo-s1",
        "npo-s2",
    ]
    for row in rows:
        for column in ("forget_quality", "model_utility", "forget_rouge", "privleak"):
            assert math.isfinite(float(row[column])), (row["row"], column)
        assert row["knowmem_forget"] == ""
    for row in rows[2:]:
        assert math.isfinite(float(row["train_seconds"])) and float(row["peak_memory_mb"]) == 300.0
    markdown = (out / "report.md").read_text()
    assert "retain (gold standard)" in markdown and "| ga | 3 |" in markdown
    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "http://" not in page and "https://" not in page
    # table + Pareto + one bar chart per metric with values + 2 loss plots
    assert page.count("data:image/png;base64,") >= 1 + 6 + 2
    assert 'class="retain"' in page and 'class="target"' in page


def test_failed_run_is_marked_and_left_empty(tmp_path):
    root = fabricate(tmp_path / "exp", seeds=(0,))
    data = json.loads((root / "report_data.json").read_text())
    data["rows"].append(
        {"id": "di-s0", "kind": "method", "variant": "di", "method": "di", "seed": 0, "status": "failed",
         "error": "loss became nan", "eval_dir": "eval/di-s0", "run_dir": "runs/di-s0"}
    )  # fmt: skip
    (root / "report_data.json").write_text(json.dumps(data))
    out = build_report([root])
    with (out / "results.csv").open() as handle:
        failed = [r for r in csv.DictReader(handle) if r["row"] == "di-s0"]
    assert failed[0]["status"] == "failed" and failed[0]["forget_quality"] == ""
    assert "| di (failed) | 1 | – |" in (out / "report.md").read_text()
    assert "loss became nan" in (out / "report.html").read_text()


def test_mean_and_ci_over_seeds(tmp_path):
    rows = [
        Row(id=f"ga-s{s}", kind="method", variant="ga", seed=s, metrics={"model_utility": v})
        for s, v in enumerate([0.2, 0.4, 0.6])
    ]
    (variant,) = aggregate(rows, ["model_utility"])
    # mean 0.4, sd 0.2, sem 0.2/sqrt(3), t(0.975, 2) = 4.3027 -> half-width 0.4968
    # Bound: approx's default on a float64 mean; rel 1e-4 for the half-width: 0.4 − x loses 1 digit, t has 7.
    assert variant.n == 3 and variant.mean["model_utility"] == pytest.approx(0.4)
    assert variant.high["model_utility"] - 0.4 == pytest.approx(4.302653 * 0.2 / math.sqrt(3), rel=1e-4)
    out = build_report([fabricate(tmp_path / "exp")], tmp_path / "rep")
    with (out / "results_mean.csv").open() as handle:
        means = {r["variant"]: r for r in csv.DictReader(handle)}
    assert means["npo"]["n"] == "3" and means["target"]["n"] == "1"
    assert float(means["npo"]["model_utility"]) == pytest.approx(0.55 * 1.1)  # Bound: default; a float64 mean
    assert float(means["npo"]["model_utility_ci_low"]) < float(means["npo"]["model_utility"])
    assert means["target"]["model_utility_ci_low"] == ""  # one value: no interval


def test_fmt_prints_dashes_for_missing_and_non_finite():
    assert [fmt(None), fmt(float("nan")), fmt(float("inf"))] == ["–"] * 3
    assert fmt(1.2e-15) == "1.20e-15" and fmt(0.4567) == "0.457" and fmt(1234.56) == "1234.6"
    assert fmt(320.0) == "320" and fmt(-100.0) == "-100"  # whole numbers (step counts) print whole


def test_several_run_dirs_make_one_comparison(tmp_path):
    a = fabricate(tmp_path / "a", name="alpha", seeds=(0,))
    b = fabricate(tmp_path / "b", name="beta", seeds=(0,))
    result = CliRunner().invoke(app, ["report", str(a), str(b), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    with (tmp_path / "cmp" / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["experiment"] for r in rows} == {"alpha", "beta"} and len(rows) == 8


def test_report_without_report_data_collects_eval_folders(tmp_path):
    root = fabricate(tmp_path / "exp", seeds=(0, 1))
    (root / "report_data.json").unlink()
    out = build_report([root])
    with (out / "results.csv").open() as handle:
        rows = {r["row"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {"target", "retain", "ga-s0", "ga-s1", "npo-s0", "npo-s1"}
    assert rows["ga-s1"]["variant"] == "ga" and rows["ga-s1"]["method"] == "ga"


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)"
)
def test_report_renders_in_chromium(tmp_path):
    out = build_report([fabricate(tmp_path / "exp")], tmp_path / "rep")
    png = tmp_path / "report.png"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "screenshot_report.py"), str(out / "report.html"), str(png)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == 1280 and height > 1000  # the window grew to the page's height

    # The checks catch a broken image.
    broken = tmp_path / "broken.html"
    broken.write_text(
        (out / "report.html").read_text().replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1)
    )
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "screenshot_report.py"),
            str(broken),
            str(tmp_path / "b.png"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1 and "images not all loaded" in result.stderr


def test_report_replaces_only_an_earlier_report(tmp_path):
    """Issue 11: `unmem report --out` wrote its four files into any folder, over the user's."""
    root = fabricate(tmp_path / "exp", seeds=(0,))
    out = build_report([root], tmp_path / "rep")
    assert (out / ".unmem-output").is_file()
    assert build_report([root], tmp_path / "rep") == out  # an earlier report is replaced whole
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("my numbers")
    (mine / "notes.txt").write_text("precious")
    for target in (mine, root, root / "eval" / "ga-s0"):
        result = CliRunner().invoke(app, ["report", str(root), "--out", str(target)])
        assert result.exit_code == 2 and "holds more than a report" in result.output, result.output
    assert (mine / "results.csv").read_text() == "my numbers"


def test_a_failed_row_shows_no_numbers_an_earlier_run_left(tmp_path):
    root = fabricate(tmp_path / "exp", seeds=(0,))
    data = json.loads((root / "report_data.json").read_text())
    data["rows"][-1] |= {"status": "failed", "error": "loss became nan"}  # npo-s0, evaluated before
    (root / "report_data.json").write_text(json.dumps(data))
    with (build_report([root]) / "results.csv").open() as handle:
        failed = [r for r in csv.DictReader(handle) if r["row"] == "npo-s0"]
    assert failed[0]["status"] == "failed" and failed[0]["forget_quality"] == ""


def test_a_swept_entry_reports_the_retain_free_choice_next_to_the_oracle(tmp_path):
    """Issue 10: the report measures the retain-free selection rule against the best grid point."""
    root = tmp_path / "sweep"
    rows = []
    # lr 1e-4: still memorised; 1e-3: as unfamiliar as holdout; 1e-2: over-forgot and lost utility.
    for lr, auc, utility, fq in ((1e-4, 0.95, 0.60, 1e-6), (1e-3, 0.52, 0.58, 0.2), (1e-2, 0.30, 0.40, 0.5)):
        run = f"npo-lr-{lr}-s0"
        metrics = {"mia_loss_auc": auc, "model_utility": utility, "forget_quality": fq}
        _write(root / "eval" / run / "summary.json", {"metrics": metrics})
        rows.append(
            {
                "id": run,
                "kind": "method",
                "variant": f"npo-lr-{lr}",
                "method": "npo",
                "seed": 0,
                "grid": {"lr": lr},
                "sweep": "npo",
                "eval_dir": f"eval/{run}",
            }
        )
    _write(root / "report_data.json", {"name": "sweep", "rows": rows})
    out = build_report([root], tmp_path / "rep")
    with (out / "selection.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["chosen"] == "npo-lr-0.001" and row["oracle"] == "npo-lr-0.01"
    assert float(row["shortfall"]) == pytest.approx(2.5)  # Bound: approx's default on float64 arithmetic
    assert "sweep npo: retain-free choice npo-lr-0.001" in (out / "report.md").read_text()
