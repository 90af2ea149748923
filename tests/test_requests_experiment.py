"""Issue 18, item 5: `unmem run` with `requests:` on the micro world, end to end.

Forty entities make four requests; three are honoured. The union of the first three is no
forget split, so its retain model (retain-requests03) is trained by the experiment; the
unions of one and two are forget01 and forget05, whose retain models serve as they are.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unmem.cli import app
from unmem.errors import UnmemError
from unmem.experiment import load_experiment
from unmem.store import Store

SEQUENCE = """\
name: seq
world: {preset: micro, seed: 0, entities: 40}
models: {preset: tiny, seed: 0, base_epochs: 1, epochs: 1}
requests: {count: 3, accept: {mia_p_min: null, mia_auc_max: 1.0, mia_auc_min: 0.0, utility_ratio_min: null}}
defaults: {lr: 1.0e-3, epochs: 1, batch_size: 8, device: cpu}
methods:
  - {method: eul, method_args: {reduction_factor: 4}}
  - {method: eul, name: eul-union, sequence: union, method_args: {reduction_factor: 4}}
eval:
  metrics: [tofu, mia]
  batch_size: 16
  max_samples: 24
  device: cpu
  options: {max_new_tokens: 4, gradnorm_samples: 0}
tracking: []
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "seq.yaml"
    path.write_text(text)
    return path


def test_requests_experiment_end_to_end(tmp_path):
    path, out = _write(tmp_path, SEQUENCE), tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "sequence.json").read_text())
    assert len(data["requests"]) == 3
    assert [Path(p).name for p in data["retain_models"].values()] == [
        "retain99",
        "retain95",
        "retain-requests03",
    ]
    runs = {run["name"]: run for run in data["runs"]}
    assert set(runs) == {"eul-s0", "eul-union-s0"}
    for run in runs.values():
        assert [step["k"] for step in run["steps"]] == [1, 2, 3]
        for step in run["steps"]:
            assert set(step["per_request"]) == {str(j) for j in range(1, step["k"] + 1)}
            assert step["per_request"][str(step["k"])]["prob"] is not None
            assert step["metrics"]["forget_quality"] is not None
    assert [s["outcome"] for s in runs["eul-s0"]["steps"]] == ["honoured"] * 3
    assert [s["outcome"] for s in runs["eul-union-s0"]["steps"]] == ["retrained"] * 3
    # EUL in a store: request 3 trained one layer on the target and fused the three.
    store = Store.open(out / "stores" / "eul-s0")
    entries = store.checked_entries()
    version = store.versions(entries)[3]
    assert version.kind == "layers" and version.base == 0 and version.components == [1, 2, 3]
    assert [e["request"]["id"] for e in entries[1:]] == ["request01", "request02", "request03"]
    with (out / "report" / "sequence.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and {r["mode"] for r in rows} == {"continue", "union"}
    report = (out / "report" / "report.md").read_text()
    assert "Deletion requests, one after another (3)" in report and "eul-union-s0" in report
    page = (out / "report" / "report.html").read_text()
    assert "Deletion requests, one after another" in page and 'alt="model utility"' in page
    assert page.count("each request&#x27;s forget probability") == 2  # one plot per run

    ledger = (out / "stores" / "eul-s0" / "ledger.jsonl").read_bytes()
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "stores" / "eul-s0" / "ledger.jsonl").read_bytes() == ledger  # nothing redone
    edited = _write(tmp_path, SEQUENCE.replace("lr: 1.0e-3", "lr: 2.0e-3"))
    result = CliRunner().invoke(app, ["run", str(edited), "--out", str(out)])
    assert result.exit_code == 2 and "store:eul-s0" in result.output and "--overwrite" in result.output


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ("requests: {count: 3, ", "requests: {count: 5, ", "requests.count", "names 4 requests"),
        (
            "  - {method: eul, method_args",
            "  - {method: eul, sequence: each, method_args",
            "methods[0].sequence",
            "continue, union",
        ),
        (
            "  - {method: eul, method_args",
            "  - {method: eul, force: maybe, method_args",
            "methods[0].force",
            "true or false",
        ),
        (
            "mia_auc_max: 1.0,",
            "mia_auc_max: 2.0,",
            "requests.accept.mia_auc_max",
            "less than or equal",
        ),
    ],
)
def test_requests_mistakes_are_one_line(tmp_path, old, new, field, message):
    with pytest.raises(UnmemError, match=rf"field '{re.escape(field)}'.*{message}"):
        load_experiment(_write(tmp_path, SEQUENCE.replace(old, new)))


def test_sequence_without_requests_is_refused(tmp_path):
    text = SEQUENCE.replace(
        "requests: {count: 3, accept: {mia_p_min: null, mia_auc_max: 1.0, mia_auc_min: 0.0, utility_ratio_min: null}}\n",
        "",
    )
    with pytest.raises(UnmemError, match=r"field 'methods\[1\]\.sequence': only with `requests:`"):
        load_experiment(_write(tmp_path, text))
