"""Recipes as data: shipped files load, layers merge in the documented order, bad files fail in one line;
calibrated stopping in an experiment uses the benchmark's holdout split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unmem.cli import app
from unmem.config import CalibratedStop, UnlearnConfig
from unmem.errors import UnmemError
from unmem.experiment import load_experiment
from unmem.experiment.plan import with_holdout
from unmem.recipes import load_recipe, merge_settings, shipped_recipes

FOUNDING = ("di", "eul", "chen", "flat")

EXPERIMENT = """\
name: t
world: {preset: micro, seed: 0}
models: {preset: tiny, epochs: 1}
recipe: world
defaults: {epochs: 2}
methods:
  - {method: npo}
  - {method: di, lr: 1.0e-3, method_args: {gamma: 2.0}}
"""


def test_shipped_recipes_cover_every_founding_method_and_build_configs():
    assert "world" in shipped_recipes()
    for name in shipped_recipes():
        recipe = load_recipe(name)
        assert set(FOUNDING) <= set(recipe.methods), name
        for method in recipe.methods:
            values = recipe.settings(method)
            UnlearnConfig(method=method, **values)  # every entry is a valid config


def test_merge_is_key_by_key_for_method_args_and_calibrated_stop():
    merged = merge_settings(
        {"lr": 1.0, "method_args": {"beta": 0.1, "alpha": 1.0}, "calibrated_stop": {"every": 2}},
        {"lr": 2.0, "method_args": {"beta": 0.5}, "calibrated_stop": {"band": 0.1}},
    )
    assert merged == {
        "lr": 2.0,
        "method_args": {"beta": 0.5, "alpha": 1.0},
        "calibrated_stop": {"every": 2, "band": 0.1},
    }


def test_unknown_recipe_and_method_name_what_exists(tmp_path):
    with pytest.raises(UnmemError, match=r"unknown recipe .nope.; shipped: .*world"):
        load_recipe("nope")
    with pytest.raises(UnmemError, match="has no settings for method 'zzz'"):
        load_recipe("world").settings("zzz")
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults: {lr: 1.0e-3}\nmethods:\n  npo: [1, 2]\n")
    with pytest.raises(UnmemError, match=rf"{bad}: field 'methods.npo': expected a mapping"):
        load_recipe(bad)


def test_experiment_layers_recipe_then_defaults_then_entry(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(EXPERIMENT)
    runs = {run.method: run.config for run in load_experiment(path).runs}
    npo, di = load_recipe("world").settings("npo"), load_recipe("world").settings("di")
    assert runs["npo"].lr == npo["lr"] and runs["npo"].epochs == 2  # defaults beat the recipe
    assert runs["npo"].method_args == npo.get("method_args", {})
    assert runs["di"].lr == 1.0e-3  # the entry beats both
    assert runs["di"].method_args == {**di.get("method_args", {}), "gamma": 2.0}


def test_calibrated_stop_takes_the_benchmarks_holdout_or_says_it_needs_one(tmp_path):
    config = UnlearnConfig(method="npo", calibrated_stop=CalibratedStop())
    filled = with_holdout(config, tmp_path / "holdout10.jsonl")
    assert (
        filled.calibrated_stop is not None and filled.calibrated_stop.holdout == tmp_path / "holdout10.jsonl"
    )
    given = UnlearnConfig(method="npo", calibrated_stop=CalibratedStop(holdout=Path("mine.jsonl")))
    assert with_holdout(given, tmp_path / "x.jsonl") is given
    with pytest.raises(UnmemError, match="needs a holdout set"):
        with_holdout(config, None)


def test_cli_recipe_with_calibrated_stop_asks_for_the_holdout(tmp_path):
    forget = tmp_path / "forget.jsonl"
    forget.write_text('{"question": "q?", "answer": "a"}\n')
    (tmp_path / "model").mkdir()
    result = CliRunner().invoke(
        app,
        ["unlearn", "--model", str(tmp_path / "model"), "--method", "ga", "--recipe", "world", "--forget", str(forget),
         "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "calibrated stopping needs a holdout set" in result.stderr
    assert not (tmp_path / "out").exists()


def test_experiment_stops_against_the_layouts_holdout_file(files_experiment, tmp_path):
    path = files_experiment()
    text = path.read_text()
    assert "checkpoint_every: 1}" in text
    path.write_text(text.replace("checkpoint_every: 1}", "checkpoint_every: 1, calibrated_stop: {every: 1}}"))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "runs" / "ga-s0" / "summary.json").read_text())
    assert summary["stopping"]["calibrated"]["history"][0]["step"] == 0  # it measured against holdout.jsonl

    (tmp_path / "data" / "holdout.jsonl").unlink()
    with pytest.raises(
        UnmemError, match=r"field 'defaults.calibrated_stop.holdout': calibrated stopping needs"
    ):
        load_experiment(path)


def test_recipes_command_lists_and_prints():
    listed = CliRunner().invoke(app, ["recipes"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "world" in listed.output, listed.output
    shown = CliRunner().invoke(app, ["recipes", "world"])
    assert shown.exit_code == 0 and "methods:" in shown.output and "calibrated_stop" in shown.output
    missing = CliRunner().invoke(app, ["recipes", "nope"])
    assert missing.exit_code == 2 and "unknown recipe 'nope'" in missing.stderr
