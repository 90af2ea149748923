"""Issue 11: never destroy the user's data, never publish a wrong model, fail in one clear line.

Each "must fix" of the issue has a regression test here that reproduces what main did
(on the tiny model) and checks the new behaviour.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import write_qa_files
from float_bounds import assert_same_computation
from unmem.cli import app
from unmem.config import build_config
from unmem.errors import UnmemError
from unmem.io import exclusive_lock
from unmem.train import unlearn

FORGET = [{"question": f"Where was {n} born?", "answer": f"{n} was born in {c}."} for n, c in
          [("Ilvan Marek", "Dunmore"), ("Sela Kovar", "Fennick"), ("Orin Vale", "Corriven"), ("Edda Lund", "Jessaly")]]  # fmt: skip
COMMON = {"method": "grad_diff", "lr": 1e-3, "epochs": 3, "batch_size": 2, "device": "cpu"}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _tree_hash(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def setup(tmp_path, tiny_model_dir):
    """M/target holds the model, M/forget.jsonl the data: the layout of the issue's report."""
    models = tmp_path / "M"
    models.mkdir()
    tiny_model_dir.rename(models / "target")
    forget = _write(models / "forget.jsonl", FORGET)
    return models, forget


def _cli_unlearn(model: Path, forget: Path, out: Path, *extra: str) -> tuple[int, str]:
    args = ["unlearn", "--model", str(model), "--method", "ga", "--forget", str(forget), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--epochs", "1", *extra])
    return result.exit_code, result.output


# -- must fix 1: --overwrite never deletes an input or a directory unmem did not write -----------


def test_overwrite_refuses_an_output_that_holds_the_input_model(setup):
    models, forget = setup
    before = _tree_hash(models)
    code, output = _cli_unlearn(models / "target", forget, models, "--overwrite")
    assert code == 2 and "contains the input model" in output and "Traceback" not in output
    assert _tree_hash(models) == before


def test_finetune_refuses_the_same(setup):
    models, forget = setup
    before = _tree_hash(models)
    args = ["finetune", "--model", str(models / "target"), "--data", str(forget), "--out", str(models)]
    result = CliRunner().invoke(app, [*args, "--overwrite", "--device", "cpu"])
    assert result.exit_code == 2 and "contains the input model" in result.output
    assert _tree_hash(models) == before


def test_a_link_cannot_smuggle_an_input_under_the_output(setup, tmp_path):
    models, forget = setup
    link = tmp_path / "link"
    link.symlink_to(models, target_is_directory=True)
    code, output = _cli_unlearn(models / "target", forget, link, "--overwrite")
    assert code == 2 and "contains the input model" in output
    code, output = _cli_unlearn(link / "target", forget, tmp_path / "elsewhere" / ".." / "M" / "target")
    assert code == 2 and "is the input model" in output


def test_overwrite_replaces_only_what_unmem_wrote(setup, tmp_path):
    models, forget = setup
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_text("precious")
    code, output = _cli_unlearn(models / "target", forget, user_dir, "--overwrite")
    assert code == 2 and "not written by unmem" in output
    assert (user_dir / "notes.txt").read_text() == "precious"
    out = tmp_path / "run"
    assert _cli_unlearn(models / "target", forget, out)[0] == 0
    assert _cli_unlearn(models / "target", forget, out)[0] == 2  # exists, no --overwrite
    assert _cli_unlearn(models / "target", forget, out, "--overwrite")[0] == 0


# -- must fix 2: a rerun never reuses checkpoints of another run ----------------------------------


def _killed(model: Path, forget: Path, out: Path, config: dict, steps: int) -> Path:
    settings = build_config({**config, "checkpoint_every": 2})
    return unlearn(model, forget, out, settings, retain_path=forget, stop_after_steps=steps)


def test_rerun_with_other_settings_refuses_the_old_checkpoints(setup, tmp_path, float64_models):
    models, forget = setup
    out = tmp_path / "out"
    _killed(models / "target", forget, out, COMMON, steps=4)
    other = build_config({**COMMON, "lr": 2e-3, "checkpoint_every": 2})
    with pytest.raises(
        UnmemError, match=r"holds checkpoints of another run \(config\.lr 0\.001 -> 0\.002\); pass --restart"
    ):
        unlearn(models / "target", forget, out, other, retain_path=forget)
    fresh = unlearn(models / "target", forget, out, other, retain_path=forget, resume=False)
    reference = unlearn(models / "target", forget, tmp_path / "reference", other, retain_path=forget)
    for name, tensor in load_file(reference / "model" / "model.safetensors").items():
        # Bound: the same run in float64 (float_bounds); an old checkpoint's weights would be far off.
        assert_same_computation(load_file(fresh / "model" / "model.safetensors")[name], tensor, msg=name)


def test_overwrite_over_a_stale_final_checkpoint_does_not_publish_it(setup, tmp_path):
    models, forget = setup
    out = tmp_path / "out"
    _killed(models / "target", forget, out, COMMON, steps=6)  # the final step of 3 epochs x 2 batches
    other = build_config({**COMMON, "method": "ga", "checkpoint_every": 2})
    with pytest.raises(UnmemError, match=r"another run \(config\.method 'grad_diff' -> 'ga'\)"):
        unlearn(models / "target", forget, out, other, overwrite=True)
    assert not out.exists()


def test_a_changed_model_is_a_different_run(setup, tmp_path, make_tiny_llama):
    models, forget = setup
    out = tmp_path / "out"
    _killed(models / "target", forget, out, COMMON, steps=4)
    make_tiny_llama(initializer_range=0.5).save_pretrained(models / "target")
    with pytest.raises(UnmemError, match=r"another run \(inputs\.model "):
        unlearn(
            models / "target",
            forget,
            out,
            build_config({**COMMON, "checkpoint_every": 2}),
            retain_path=forget,
        )


def test_resume_says_so_and_counts_the_whole_run(setup, tmp_path, capsys):
    models, forget = setup
    full = unlearn(models / "target", forget, tmp_path / "full", build_config(COMMON), retain_path=forget)
    out = tmp_path / "out"
    work = _killed(models / "target", forget, out, COMMON, steps=5)
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["step-2", "step-4"]
    resumed = unlearn(
        models / "target", forget, out, build_config({**COMMON, "checkpoint_every": 2}), retain_path=forget
    )
    assert "resuming from step 4 of 6" in capsys.readouterr().err
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["tokens"] == json.loads((full / "summary.json").read_text())["tokens"]
    assert summary["steps"] == 6 and summary["train_seconds"] > 0


def test_old_checkpoints_are_pruned(setup, tmp_path):
    models, forget = setup
    config = {**COMMON, "epochs": 10, "keep_checkpoints": 2}
    work = _killed(models / "target", forget, tmp_path / "out", config, steps=20)
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["step-18", "step-20"]


# -- must fix 3: one writer per output ---------------------------------------------------------------


def test_a_second_writer_fails_at_once_naming_the_holder(setup, tmp_path):
    models, forget = setup
    out = tmp_path / "out"
    with exclusive_lock(out):
        code, output = _cli_unlearn(models / "target", forget, out)
    assert code == 2 and "in use by pid" in output and "choose another --out" in output
    assert not out.exists()
    assert _cli_unlearn(models / "target", forget, out)[0] == 0  # released: the next run goes ahead
    assert not out.with_name("out.lock").exists()


# -- must fix 4: no non-finite model is published -----------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_settings_are_rejected(setup, tmp_path, value):
    models, forget = setup
    code, output = _cli_unlearn(models / "target", forget, tmp_path / "out", "--lr", value)
    assert code == 2 and "field 'lr'" in output
    assert not (tmp_path / "out").exists()


def test_non_finite_weights_are_never_published(setup, tmp_path, monkeypatch):
    models, forget = setup
    real_step = torch.optim.AdamW.step

    def poisoned_step(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("nan"))
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoned_step)
    config = build_config({**COMMON, "method": "ga", "max_steps": 1})
    with pytest.raises(UnmemError, match="is not finite after training; nothing was published"):
        unlearn(models / "target", forget, tmp_path / "out", config)
    assert not (tmp_path / "out").exists()


# -- should fix: clear one-line errors ------------------------------------------------------------------


def test_method_args_must_be_a_mapping(setup, tmp_path):
    models, forget = setup
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("method: ga\nmethod_args: [1, 2]\n")
    code, output = _cli_unlearn(models / "target", forget, tmp_path / "out", "--config", str(yaml_file))
    assert code == 2 and "field 'method_args' must be a mapping" in output


def test_a_focus_without_sensitive_spans_fails_before_any_work(setup, tmp_path):
    models, forget = setup
    config = build_config({**COMMON, "method": "flat", "method_args": {"focus": "hard"}})
    with pytest.raises(
        UnmemError, match=r"forget\.jsonl: method 'flat' with focus='hard' .* no record has one"
    ):
        unlearn(models / "target", forget, tmp_path / "out", config)
    assert not (tmp_path / "out").exists()


def test_cli_values_are_yaml_scalars(setup, tmp_path):
    models, forget = setup
    args = ["--param", "beta=1e-1", "--method", "npo", "--retain", str(forget)]
    code, output = _cli_unlearn(models / "target", forget, tmp_path / "out", *args)
    assert code == 0, output
    assert json.loads((tmp_path / "out" / "run_config.json").read_text())["method_config"]["beta"] == 0.1


def test_duplicate_yaml_keys_are_rejected_with_both_lines(setup, tmp_path):
    models, forget = setup
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("method: ga\nlr: 0.001\nlr: 0.002\n")
    code, output = _cli_unlearn(models / "target", forget, tmp_path / "out", "--config", str(yaml_file))
    assert code == 2 and "c.yaml:3: invalid YAML (duplicate key 'lr' (lines 2 and 3))" in output


def test_unwritable_output_fails_before_loading_the_model(setup, monkeypatch):
    models, forget = setup
    import unmem.train.unlearning as unlearn_module

    monkeypatch.setattr(unlearn_module, "load_policy", lambda *a: pytest.fail("model loaded"))
    code, output = _cli_unlearn(models / "target", forget, Path("/proc/unmem-test/out"))
    assert code == 2 and "cannot write there" in output


def test_leftover_partial_folders_are_cleaned(setup, tmp_path):
    models, forget = setup
    leftover = tmp_path / ".out.abc123.partial"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    assert _cli_unlearn(models / "target", forget, tmp_path / "out")[0] == 0
    assert not leftover.exists()


def test_published_files_follow_the_umask(setup, tmp_path):
    models, forget = setup
    assert _cli_unlearn(models / "target", forget, tmp_path / "out")[0] == 0
    weights = tmp_path / "out" / "model" / "model.safetensors"
    assert weights.stat().st_mode & 0o777 == (tmp_path / "out" / "summary.json").stat().st_mode & 0o777


# -- must fix 3 for `unmem eval` and `unmem run`: one writer per output -------------------------------


def _cli_eval(model: Path, data: Path, out: Path, *extra: str):
    args = ["eval", "--model", str(model), "--data", str(data), "--benchmark", "files", "--out", str(out)]
    args += ["--device", "cpu", "--metrics", "tofu", "--max-samples", "2", "--batch-size", "4", *extra]
    return CliRunner().invoke(app, args)


def test_a_second_eval_into_one_directory_fails_at_once(tiny_model_dir, tmp_path):
    """main: two `unmem eval --out E` both exit 0, the summary of one overwrites the other's."""
    data = write_qa_files(tmp_path / "data")
    out = tmp_path / "eval"
    with exclusive_lock(out):
        result = _cli_eval(tiny_model_dir, data, out)
    assert (
        result.exit_code == 2 and "in use by pid" in result.output and "choose another --out" in result.output
    )
    assert not out.exists()
    assert _cli_eval(tiny_model_dir, data, out).exit_code == 0  # released: the next one goes ahead
    assert (out / "summary.json").is_file() and not out.with_name("eval.lock").exists()


def test_a_second_run_into_a_held_experiment_fails_at_once(files_experiment, tmp_path):
    out = tmp_path / "out"
    with exclusive_lock(out):
        result = CliRunner().invoke(app, ["run", str(files_experiment()), "--out", str(out)])
    assert result.exit_code == 2 and "in use by pid" in result.stderr, result.output
    assert not out.exists()


# -- should fix: `unmem eval` writes only inside its output ---------------------------------------------


def test_eval_never_writes_into_its_model_or_data(tiny_model_dir, tmp_path):
    data = write_qa_files(tmp_path / "data")
    before = _tree_hash(tmp_path)
    for out, message in (
        (tiny_model_dir / "eval", "is inside the input model"),
        (data, "is the input data"),
        (tmp_path, "contains the input"),
    ):
        result = _cli_eval(tiny_model_dir, data, out, "--overwrite")
        assert result.exit_code == 2 and message in result.output, result.output
    assert _tree_hash(tmp_path) == before


def test_eval_replaces_only_an_earlier_evaluation(tiny_model_dir, tmp_path):
    data = write_qa_files(tmp_path / "data")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.json").write_text('{"my": "notes"}')
    result = _cli_eval(tiny_model_dir, data, mine, "--overwrite")
    assert result.exit_code == 2 and "not an `unmem eval` output" in result.output
    assert (mine / "summary.json").read_text() == '{"my": "notes"}'
    out = tmp_path / "eval"
    assert _cli_eval(tiny_model_dir, data, out).exit_code == 0
    assert _cli_eval(tiny_model_dir, data, out, "--overwrite").exit_code == 0


def test_eval_keeps_the_retain_cache_under_its_output(tiny_model_dir, tmp_path):
    """main wrote `.retain_cache` into the parent of --out."""
    data = write_qa_files(tmp_path / "data")
    evals = tmp_path / "evals"
    result = _cli_eval(tiny_model_dir, data, evals / "a", "--retain-model", str(tiny_model_dir))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in evals.iterdir()) == ["a"]
    assert list((evals / "a" / "retain_cache").glob("*/tofu.json"))
    shared = tmp_path / "cache"
    result = _cli_eval(
        tiny_model_dir,
        data,
        evals / "b",
        "--retain-model",
        str(tiny_model_dir),
        "--retain-cache",
        str(shared),
    )
    assert result.exit_code == 0 and list(shared.glob("*/tofu.json"))
    result = _cli_eval(tiny_model_dir, data, evals / "c", "--retain-cache", str(tiny_model_dir / "cache"))
    assert (
        result.exit_code == 2
        and "--retain-cache" in result.output
        and "is inside the input model" in result.output
    )


def test_lm_eval_tasks_that_import_python_need_trust(tiny_model_dir, tmp_path, monkeypatch):
    """main imported the Python a task YAML names (``!function``) without any trust flag."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "lm_eval" else real_find_spec(name, *a),
    )
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "t.yaml").write_text("task: t\ndataset_path: json\nprocess_docs: !function utils.process_docs\n")
    data = write_qa_files(tmp_path / "data")
    result = _cli_eval(
        tiny_model_dir, data, tmp_path / "out", "--metrics", "lm_eval", "--lm-eval-tasks", str(tasks)
    )
    assert result.exit_code == 2, result.output
    assert (
        f"{tasks / 't.yaml'}:3 (!function utils.process_docs)" in result.output
        and "--trust-remote-code" in result.output
    )

    from unmem.evaluation.families.lm_eval import check
    from unmem.evaluation.options import EvalConfig
    from unmem.evaluation.registry import EvalInputs

    check(EvalInputs(None, EvalConfig(lm_eval_tasks=tasks, trust_remote_code=True)))  # type: ignore[arg-type]


# -- should fix: `unmem run` on an edited experiment file --------------------------------------------------


def _run(path: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["run", str(path), "--out", str(out), *extra])


def _numbers(out: Path) -> dict[str, dict[str, str]]:
    """results.csv without the timing columns, by row."""
    import csv

    with (out / "report" / "results.csv").open() as handle:
        return {
            r["row"]: {k: v for k, v in r.items() if k not in ("train_seconds", "peak_memory_mb")}
            for r in csv.DictReader(handle)
        }


def test_an_edited_experiment_redoes_what_changed_and_says_so(files_experiment, tmp_path):
    """main: a stale stage failed on its own while the others went on, and the report mixed the
    old row's numbers (marked failed) with the new rows'."""
    path = files_experiment(retain=True)
    text = path.read_text().replace("  - {method: ga}", "  - {method: ga}\n  - {method: npo}")
    path.write_text(text)
    out = tmp_path / "out"
    assert _run(path, out).exit_code == 0
    npo_summary = out / "runs" / "npo-s0" / "summary.json"
    target_rows = out / "eval" / "target" / "per_sample" / "tofu.jsonl"
    npo_time, target_time = npo_summary.stat().st_mtime_ns, target_rows.stat().st_mtime_ns

    path.write_text(text.replace("  - {method: ga}", "  - {method: ga, lr: 2.0e-3}"))
    result = _run(path, out)
    assert result.exit_code == 2
    assert (
        "exp.yaml changed since the last run there: unlearn:ga-s0 (lr 0.001 -> 0.002) and 1 more stage(s)"
        in result.stderr
    )
    state = json.loads((out / "state.json").read_text())
    assert "--overwrite" in result.stderr and state["done"] == state["total"] == 9  # nothing was touched

    result = _run(path, out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (
        "redoing what changed: unlearn:ga-s0 (lr 0.001 -> 0.002), eval:ga-s0 (after unlearn:ga-s0)"
        in result.stderr
    )
    assert npo_summary.stat().st_mtime_ns == npo_time  # what did not change is not redone
    assert target_rows.stat().st_mtime_ns == target_time
    assert _run(path, tmp_path / "fresh").exit_code == 0
    assert _numbers(out) == _numbers(tmp_path / "fresh")  # exactly a fresh run of the edited file

    path.write_text(path.read_text().replace("metrics: [tofu, mia]", "metrics: [tofu]"))
    result = _run(path, out, "--overwrite")
    assert result.exit_code == 0 and "eval:retain (eval.metrics ['tofu', 'mia'] -> ['tofu'])" in result.stderr
    assert not any(column.startswith("mia_") for column in next(iter(_numbers(out).values())))


def test_a_question_longer_than_max_length_keeps_its_answer_and_warns_once(setup, tmp_path):
    """main cut the answer off (the example trained on nothing), silently."""
    models, forget = setup
    long = {
        "question": "Where, of all the towns of the world, was Ilvan Marek born? " * 3,
        "answer": "In Dunmore.",
    }
    _write(forget, [*FORGET, long])
    config = tmp_path / "c.yaml"
    config.write_text("max_length: 64\n")
    code, output = _cli_unlearn(models / "target", forget, tmp_path / "out", "--config", str(config))
    assert code == 0, output
    warnings = [line for line in output.splitlines() if line.startswith("warning:")]
    assert (
        len(warnings) == 1
        and "1 of 5 sequences are longer than max_length 64 (first: record 5)" in warnings[0]
    )
