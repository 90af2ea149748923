"""Issue 11, acceptance: kill -9 an `unmem run` in the middle of a stage and at its final saves,
rerun, and get the report of an uninterrupted run.

The experiment is the smallest whole one (tests/conftest.py: tiny given models, `files` data,
one method of four checkpointed steps, TOFU and MIA). Each run is a real process that
tests/kill_at.py kills with SIGKILL at a chosen point; the same output folder is then run
again, as a user would, until a run finishes.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

KILL_AT = Path(__file__).with_name("kill_at.py")

# (point, what it interrupts, a file that must exist after the kill)
KILLS = [
    ("checkpoint:2", "unlearning, two of four steps saved", "runs/ga-s0.work/checkpoints/step-2"),
    ("before:runs/ga-s0:1", "the run's final save (complete, not yet in place)", "runs/ga-s0.work"),
    ("after:eval/ga-s0/summary.json:1", "the run's evaluation, one family of two done", "eval/ga-s0"),
    ("after:report:1", "the experiment's final save (report in place, not recorded)", "report/report.html"),
]


def _unmem(*args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    prefix = [str(KILL_AT), kill_at] if kill_at else ["-m", "unmem"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, *prefix, *args], capture_output=True, text=True, env=env, timeout=600
    )


def _numbers(out: Path) -> dict[str, dict[str, str]]:
    """results.csv without its timing columns, by row."""
    with (out / "report" / "results.csv").open() as handle:
        return {
            row["row"]: {k: v for k, v in row.items() if k not in ("train_seconds", "peak_memory_mb")}
            for row in csv.DictReader(handle)
        }


def test_a_killed_experiment_resumes_to_the_uninterrupted_report(files_experiment, tmp_path):
    path = files_experiment(retain=True)
    reference = _unmem("run", str(path), "--out", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    out = tmp_path / "out"
    logs = []
    for point, what, left in KILLS:
        killed = _unmem("run", str(path), "--out", str(out), kill_at=point)
        assert killed.returncode == -signal.SIGKILL, (what, killed.stderr[-3000:])
        assert (out / left).exists(), what
        logs.append(killed.stderr)
    assert "resuming from step 2 of 4" in logs[1]  # the second run went on from the kill's checkpoint
    assert "resuming from step 4 of 4" in logs[2]  # the third published what the second had finished

    final = _unmem("run", str(path), "--out", str(out))
    assert final.returncode == 0, final.stderr[-3000:]
    assert _numbers(out) == _numbers(tmp_path / "reference")
    state = json.loads((out / "state.json").read_text())
    assert state["done"] == state["total"]
    leftovers = [p for p in out.rglob("*") if p.name.endswith((".partial", ".lock", ".tmp", ".work"))]
    assert not leftovers and not out.with_name("out.lock").exists()
