"""Experiment files: every mistake is one line naming key and YAML line, before any work; the micro run."""

from __future__ import annotations

import csv
import json
import math
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from unmem.cli import app
from unmem.experiment import format_keypath, line_of, load_experiment, shipped_config

GOOD = """\
name: t
world: {preset: micro, seed: 0}
models: {preset: tiny, epochs: 1}
split: forget10
defaults: {lr: 1e-3, epochs: 1}
methods:
  - {method: ga}
  - method: npo
    method_args:
      beta: 0.1
eval: {metrics: [tofu, muse]}
"""


def _run(tmp_path: Path, text: str):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    return path, result


@pytest.mark.parametrize(
    ("old", "new", "key", "line"),
    [
        ("- {method: ga}", "- {method: gaa}", "methods[0].method", 7),
        ("beta: 0.1", "beta: high", "methods[1].method_args.beta", 10),
        ("beta: 0.1", "betta: 0.1", "methods[1].method_args.betta", 10),
        ("beta: 0.1", "beta: -1", "methods[1].method_args.beta", 10),
        ("models: {preset: tiny, epochs: 1}", "target: no/such/model", "target", 3),
        ("metrics: [tofu, muse]", "metrics: [tofu, musee]", "eval.metrics[1]", 11),
        ("{lr: 1e-3, epochs: 1}", "{lr: fast, epochs: 1}", "defaults.lr", 5),
        ("{lr: 1e-3, epochs: 1}", "{lr: 1e-3, epoch: 1}", "defaults.epoch", 5),
        ("split: forget10", "split: forget50", "split", 4),
        ("- {method: ga}", "- {method: ga, lora_r: [0, 8]}", "methods[0].lora_r", 7),
        ("{preset: tiny, epochs: 1}", "{preset: huge, epochs: 1}", "models.preset", 3),
        ("{preset: micro, seed: 0}", "{preset: micro, seed: 0, entitys: 3}", "world.entitys", 2),
        ("name: t", "name: t\nmethodz: []", "methodz", 2),
        ("name: t", "name: t\nthreads: 0", "threads", 2),
    ],
)
def test_bad_experiment_is_one_line_naming_key_and_line(tmp_path, old, new, key, line):
    assert old in GOOD
    path, result = _run(tmp_path, GOOD.replace(old, new))
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert f"{path}:{line}: field '{key}'" in message, message
    assert not (tmp_path / "out").exists()  # nothing started: no world/, models/ or runs/


def test_good_experiment_validates_and_expands_grid_and_seeds(tmp_path):
    text = GOOD.replace(
        "- {method: ga}", "- {method: flat, method_args: {divergence: [kl, tv]}, lr: [1e-3, 2e-3]}"
    )
    path = tmp_path / "exp.yaml"
    path.write_text(text.replace("split: forget10", "split: forget10\nseeds: [0, 1]"))
    exp = load_experiment(path)
    names = [run.name for run in exp.runs]
    assert names[:2] == ["flat-divergence-kl_lr-0.001-s0", "flat-divergence-kl_lr-0.001-s1"]
    assert len(names) == 2 * 2 * 2 + 2 and names[-1] == "npo-s1"
    flat = exp.runs[0].config
    assert flat.method_args == {"divergence": "kl"} and flat.lr == 1e-3 and flat.epochs == 1
    assert exp.runs[-1].config.method_args == {"beta": 0.1} and exp.runs[-1].config.seed == 1


def test_repeated_run_name_asks_for_a_name(tmp_path):
    _, result = _run(tmp_path, GOOD.replace("- {method: ga}", "- {method: npo}\n  - {method: ga}"))
    assert result.exit_code == 2 and "give one of them a `name:`" in result.stderr


def test_line_of_walks_mappings_and_sequences():
    node = yaml.compose("a:\n  b:\n    - x\n    - {c: 1,\n       d: 2}\n")
    assert line_of(node, ("a", "b", 1, "d")) == 5
    assert line_of(node, ("a", "missing")) == 1  # the deepest key that exists
    assert format_keypath(("methods", 2, "method_args", "beta")) == "methods[2].method_args.beta"


def test_shipped_configs_validate():
    demo = load_experiment(shipped_config("demo"))
    methods = {run.method for run in demo.runs}
    assert {"ga", "grad_diff", "npo", "simnpo", "idk_dpo", "di", "eul", "chen", "flat"} <= methods
    micro = load_experiment(shipped_config("micro"))
    assert [run.name for run in micro.runs] == ["ga-s0", "npo-s0", "di-s0"]


def test_micro_experiment_end_to_end_resumes_after_interrupt(tmp_path, monkeypatch):
    """Interrupted at the second run, resumed, re-run (all cached), then an edit needs --overwrite."""
    import unmem.train

    out = tmp_path / "out"
    config = shipped_config("micro")
    real_unlearn = unmem.train.unlearn

    threads_seen = []

    def interrupt_npo(model_dir, forget_path, out_dir, config, **kwargs):
        threads_seen.append(torch.get_num_threads())
        if config.method == "npo":
            raise KeyboardInterrupt
        return real_unlearn(model_dir, forget_path, out_dir, config, **kwargs)

    monkeypatch.setattr(unmem.train, "unlearn", interrupt_npo)
    torch.set_num_threads(2)  # the experiment's `threads: 1` default holds inside each run
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(out)])
    assert result.exit_code == 130, result.output
    assert threads_seen == [1, 1] and torch.get_num_threads() == 2
    state = json.loads((out / "state.json").read_text())["stages"]
    assert state["unlearn:ga-s0"]["status"] == "done" and state["unlearn:npo-s0"]["status"] == "interrupted"
    ga_summary = out / "runs" / "ga-s0" / "summary.json"
    ga_time = ga_summary.stat().st_mtime_ns

    monkeypatch.setattr(unmem.train, "unlearn", real_unlearn)
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert ga_summary.stat().st_mtime_ns == ga_time  # done work is not redone
    report = out / "report"
    with (report / "results.csv").open() as handle:
        rows = {row["row"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["target", "retain", "ga-s0", "npo-s0", "di-s0"]
    for name, row in rows.items():
        for column in ("forget_quality", "model_utility", "forget_truth_ratio", "privleak", "train_seconds"):
            assert math.isfinite(float(row[column])), (name, column, row[column])
    # Bound: approx's default; retain vs itself is a KS statistic of 0, p-value 1, written to CSV and read back.
    assert float(rows["retain"]["forget_quality"]) == pytest.approx(1.0)
    assert (report / "report.md").is_file() and (report / "report.html").is_file()
    state = json.loads((out / "state.json").read_text())
    assert state["done"] == state["total"]

    result = CliRunner().invoke(app, ["run", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    seconds = {k: v.get("seconds") for k, v in json.loads((out / "state.json").read_text())["stages"].items()}
    assert ga_summary.stat().st_mtime_ns == ga_time and seconds["unlearn:ga-s0"] is not None

    # Stages made by an older unmem, before a setting existed: kept while the setting is at its
    # default (as they ran), a change when it is not.
    _record_as_before(out, "fuse_passes")
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(out)])
    assert result.exit_code == 0 and "kept unlearn:ga-s0, eval:ga-s0" in result.stderr, result.output
    assert ga_summary.stat().st_mtime_ns == ga_time
    _record_as_before(out, "lr")  # 1e-3 in the file, 1e-5 by default: the run was not made as today's
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(out)])
    assert result.exit_code == 2 and "unlearn:ga-s0 (lr" in result.stderr, result.output

    edited = tmp_path / "micro.yaml"
    edited.write_text(config.read_text().replace("lr: 1.0e-3", "lr: 2.0e-3"))
    result = CliRunner().invoke(app, ["run", str(edited), "--out", str(out)])
    assert result.exit_code == 2 and "--overwrite" in result.stderr, result.output


def _record_as_before(out: Path, setting: str) -> None:
    """state.json as an unmem without ``setting`` would have written it for the GA run and its evaluation."""
    from unmem.io import cache_key

    path = out / "state.json"
    state = json.loads(path.read_text())
    unlearn, evaluation = state["stages"]["unlearn:ga-s0"], state["stages"]["eval:ga-s0"]
    del unlearn["inputs"]["config"][setting]
    unlearn["key"] = cache_key("unlearn", **unlearn["inputs"])
    evaluation["inputs"]["model"] = unlearn["key"]
    evaluation["key"] = cache_key("eval-row", **evaluation["inputs"])
    path.write_text(json.dumps(state))


@pytest.mark.parametrize(
    ("old", "new", "kept"),
    [
        ({"lr": 1e-3}, {"lr": 1e-3, "fuse_passes": True}, True),  # new, at its default
        ({"lr": 1e-3}, {"lr": 1e-3, "fuse_passes": False}, False),  # new, not at its default
        ({"lr": 1e-3, "fuse_passes": True}, {"lr": 1e-3}, False),  # a recorded setting gone
        ({"lr": 1e-3}, {"lr": 2e-3, "fuse_passes": True}, False),  # another change besides
        ({}, {"no_such_setting": 1}, False),  # not a field: nothing says what its default is
        ({}, {"method": "ga"}, False),  # a required field cannot be new: the record lost it
    ],
)
def test_only_new_defaults_keeps_settings_added_at_their_default(old, new, kept):
    from unmem.config import UnlearnConfig
    from unmem.experiment.stages import only_new_defaults

    config = UnlearnConfig(method="ga", lr=1e-3)
    assert (
        only_new_defaults({"config": old, "data": "d"}, {"config": new, "data": "d"}, {"config": config})
        is kept
    )


def test_only_new_defaults_reads_nested_settings():
    from unmem.config import CalibratedStop, UnlearnConfig
    from unmem.experiment.stages import only_new_defaults

    config = UnlearnConfig(method="ga", calibrated_stop=CalibratedStop(holdout="h.jsonl"))
    new = config.model_dump(mode="json")
    old = json.loads(json.dumps(new))
    del old["calibrated_stop"]["verbatim_first"]
    assert only_new_defaults(old, new, config)
    new["calibrated_stop"]["verbatim_first"] = True
    assert not only_new_defaults(old, new, config)
    del old["calibrated_stop"]  # a whole block new, but set (not its default None): a change
    assert not only_new_defaults(old, config.model_dump(mode="json"), config)


def test_demo_show_prints_the_shipped_file():
    result = CliRunner().invoke(app, ["demo", "--show"])
    assert result.exit_code == 0 and textwrap.dedent(result.stdout).startswith("# The demo")


def test_trackers_whose_package_is_missing_are_skipped(tmp_path, monkeypatch):
    import accelerate.utils

    from unmem.experiment import make_trackers

    for name in ("is_tensorboard_available", "is_mlflow_available", "is_wandb_available"):
        monkeypatch.setattr(accelerate.utils, name, lambda: False)
    assert make_trackers(["tensorboard", "mlflow", "wandb"], "exp", "ga-s0", tmp_path) == []


def test_tensorboard_tracker_logs_final_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from unmem.experiment import make_trackers

    (tracker,) = make_trackers(["tensorboard"], "exp", "ga-s0", tmp_path)
    tracker.store_init_configuration({"lr": 1e-3, "method": "ga"})
    tracker.log({"forget_quality": 0.5}, step=0)
    tracker.finish()
    assert list((tmp_path / "ga-s0").glob("events.out.tfevents.*"))


GIVEN_MODELS = """\
name: given
benchmark: {benchmark}
data: {data}
split: {split}
target: {target}
{retain}
defaults: {{lr: 1.0e-3, epochs: 1, max_steps: 1, batch_size: 4, device: cpu}}
methods:
  - {{method: grad_diff}}                # a retain term: the run reads the layout's retain file too
eval:
  metrics: [{metrics}]
  max_samples: 3
  batch_size: 4
  device: cpu
  options: {{max_new_tokens: 4, knowmem_max_new_tokens: 4, verbmem_max_new_tokens: 4, gradnorm_samples: 2}}
tracking: []
"""


def _copy_model(source: Path, target: Path, noise: float = 0.0) -> Path:
    """A copy of a model directory; ``noise`` perturbs its weights (another "retrained" model)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    if noise:
        weights = next(target.glob("*.safetensors"))
        generator = torch.Generator().manual_seed(1)
        tensors = {
            k: v + noise * torch.randn(v.shape, generator=generator) for k, v in load_file(weights).items()
        }
        save_file(tensors, weights, metadata={"format": "pt"})
    return target


def _given_experiment(tmp_path: Path, data: Path, target: Path, retain: str, **fields) -> Path:
    values = {"benchmark": "tofu", "split": "forget10", "metrics": "tofu, muse, mia"} | fields
    path = tmp_path / "exp.yaml"
    path.write_text(GIVEN_MODELS.format(data=data, target=target, retain=retain, **values))
    return path


def _results(out: Path) -> dict[str, dict[str, str]]:
    with (out / "report" / "results.csv").open() as handle:
        return {row["row"]: row for row in csv.DictReader(handle)}


def test_tofu_layout_with_given_target_and_retain_runs_end_to_end(
    published_layouts, tiny_model_dir, tmp_path
):
    tofu, _ = published_layouts
    retain = _copy_model(tiny_model_dir, tmp_path / "retain90", noise=0.05)
    path = _given_experiment(tmp_path, tofu, tiny_model_dir, f"retain: {retain}")
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    rows = _results(tmp_path / "out")
    assert list(rows) == ["target", "retain", "grad_diff-s0"]
    assert float(rows["retain"]["forget_quality"]) == pytest.approx(1.0)  # Bound: as above (KS p of 1)
    for name in ("target", "grad_diff-s0"):
        assert math.isfinite(float(rows[name]["forget_quality"])), name
    data = json.loads((tmp_path / "out" / "report_data.json").read_text())
    assert data["benchmark"] == "tofu" and data["retain"] == [str(retain)] and data["noise_floor"] is None
    summary = json.loads((tmp_path / "out" / "runs" / "grad_diff-s0" / "summary.json").read_text())
    assert summary["forget"] == str(tofu / "forget10.json") and summary["retain"] == str(
        tofu / "retain90.json"
    )


def test_without_a_retain_model_forget_quality_is_marked_not_computed(
    published_layouts, tiny_model_dir, tmp_path
):
    tofu, _ = published_layouts
    path = _given_experiment(tmp_path, tofu, tiny_model_dir, "", metrics="tofu, mia")
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    rows = _results(tmp_path / "out")
    assert list(rows) == ["target", "grad_diff-s0"]
    assert all(row["forget_quality"] == "" for row in rows.values())
    assert all(math.isfinite(float(row["mia_loss_auc"])) for row in rows.values())  # retain-free metrics fill
    report = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "forget_quality not computed: the experiment has no retain model" in report
    assert "forget_quality not computed" in (tmp_path / "out" / "report" / "report.html").read_text()


def test_several_retain_models_give_the_noise_floor(published_layouts, tiny_model_dir, tmp_path):
    tofu, _ = published_layouts
    retains = [_copy_model(tiny_model_dir, tmp_path / f"retain{i}", noise=0.05 * i) for i in (1, 2, 3)]
    listed = "retain:\n" + "".join(f"  - {p}\n" for p in retains)
    path = _given_experiment(tmp_path, tofu, tiny_model_dir, listed, metrics="tofu")
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    floor = json.loads((tmp_path / "out" / "report_data.json").read_text())["noise_floor"]
    assert floor["models"] == ["retain", "retain-2", "retain-3"] and len(floor["pairs"]) == 3
    values = [pair["forget_quality"] for pair in floor["pairs"]]
    assert floor["min"] == min(values) and 0 < floor["min"] <= floor["median"] <= 1
    assert list(_results(tmp_path / "out")) == [
        "target",
        "retain",
        "grad_diff-s0",
    ]  # extra retains: noise floor only
    assert "noise floor of forget quality" in (tmp_path / "out" / "report" / "report.md").read_text()


def test_muse_layout_unlearns_knowmem_qa(published_layouts, tiny_model_dir, tmp_path):
    _, muse = published_layouts
    path = _given_experiment(
        tmp_path, muse, tiny_model_dir, "", benchmark="muse", split="forget", metrics="muse"
    )
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    rows = _results(tmp_path / "out")
    assert (
        math.isfinite(float(rows["grad_diff-s0"]["knowmem_forget"]))
        and rows["grad_diff-s0"]["privleak"] == ""
    )
    summary = json.loads((tmp_path / "out" / "runs" / "grad_diff-s0" / "summary.json").read_text())
    assert summary["forget"].endswith("knowmem/forget_qa.json")


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("benchmark: tofu\nmodels: {preset: tiny}", "benchmark", "needs `data:`"),
        ("benchmark: tofoo\ndata: .", "benchmark", "unknown benchmark 'tofoo'"),
        ("benchmark: muse\ndata: .", "data", "file not found"),
        (
            "models: {preset: tiny, retain_seeds: [1, 2]}",
            "models.retain_seeds",
            "must include the models' seed 0",
        ),
        ("models: {preset: tiny, retain_seeds: [0, 0]}", "models.retain_seeds", "seeds repeat"),
        ("world: {preset: micro}\ndata: .", "data", "either `world:`"),
    ],
)
def test_benchmark_and_model_sources_are_checked(tmp_path, text, key, message):
    path = tmp_path / "exp.yaml"
    path.write_text(f"name: t\n{text}\nmethods: [{{method: ga}}]\n")
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert f"field '{key}'" in result.stderr and message in result.stderr, result.stderr


def test_world_models_ask_for_retain_seeds_only_when_given(tmp_path, tiny_model_dir, monkeypatch):
    import shutil

    import unmem.pretrain
    from unmem.experiment.runner import Runner
    from unmem.layout import ExperimentDir

    calls = []

    def fake_train_world_models(world, out_dir, forget_splits, config, **kwargs):
        calls.append(kwargs)
        for name in ("target", "retain90", "retain90-seed2"):
            if not (out_dir / name).exists():
                shutil.copytree(tiny_model_dir, out_dir / name)

    monkeypatch.setattr(unmem.pretrain, "train_world_models", fake_train_world_models)
    for seeds, expected, names in (
        ("", {"overwrite": True}, ["retain"]),  # the runner's own stage keys guard what it replaces
        (", retain_seeds: [0, 2]", {"overwrite": True, "retain_seeds": [0, 2]}, ["retain", "retain-seed2"]),
    ):
        path = tmp_path / "exp.yaml"
        path.write_text(
            f"name: t\nworld: {{preset: micro}}\nmodels: {{preset: tiny{seeds}}}\nmethods: [{{method: ga}}]\n"
        )
        runner = Runner(load_experiment(path), ExperimentDir(tmp_path / "out"), False, None)  # type: ignore[arg-type]
        runner.data()
        assert runner.models() and calls[-1] == expected
        assert [row.name for row in runner.retains] == names


@pytest.mark.parametrize(
    ("name", "layout"), [("tofu-experiment", "tofu/data"), ("muse-experiment", "muse/news")]
)
def test_example_configs_for_published_layouts_validate(
    published_layouts, tiny_model_dir, tmp_path, name, layout
):
    """configs/<name>.yaml, with the published layout and two models where its comments put them."""
    import shutil

    tofu, muse = published_layouts
    shutil.copytree(tofu if name.startswith("tofu") else muse, tmp_path / "runs" / layout)
    for model in ("tofu/target", "tofu/retain90", "muse/target", "muse/retrain"):
        _copy_model(tiny_model_dir, tmp_path / "runs" / model)
    config = tmp_path / "configs" / f"{name}.yaml"
    config.parent.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml", config)
    exp = load_experiment(config)
    assert exp.benchmark.name == name.split("-")[0] and exp.benchmark.data_dir == tmp_path / "runs" / layout
    assert exp.models.target is not None and len(exp.models.retains) == 1 and exp.runs
