"""Issue 11, "should fix": every bad input is one line naming the file/line/field, exit 2, nothing written.

Each row of ``CASES`` breaks one thing in an otherwise good ``unmem unlearn`` call (the
model, the forget file, the config, the output) and names what the error must say;
``EVAL_CASES`` and ``RUN_CASES`` do the same for ``unmem eval`` and ``unmem run``, where
every check also comes before any model is loaded.
"""

from __future__ import annotations

import errno
import gzip
import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_qa_files
from unmem.cli import app

GOOD = [{"question": "Where was Ilvan Marek born?", "answer": "Ilvan Marek was born in Dunmore."}] * 4


class Call:
    """One `unmem unlearn` invocation, each part replaceable by a case."""

    def __init__(self, root: Path, model: Path) -> None:
        self.root, self.model = root, model
        self.forget = root / "forget.jsonl"
        self.forget.write_text("".join(json.dumps(r) + "\n" for r in GOOD))
        self.out = root / "out"
        self.extra: list[str] = []

    def args(self) -> list[str]:
        base = ["unlearn", "--model", str(self.model), "--method", "ga", "--forget", str(self.forget)]
        return [*base, "--out", str(self.out), "--device", "cpu", "--epochs", "1", *self.extra]


def _gzip_forget(call: Call) -> None:
    call.forget.write_bytes(gzip.compress(call.forget.read_bytes()))


def _latin1_forget(call: Call) -> None:
    text = json.dumps({"question": "Où est né Ilvan?", "answer": "à Dunmore"}, ensure_ascii=False)
    call.forget.write_bytes((json.dumps(GOOD[0]) + "\n" + text + "\n").encode("latin-1"))


def _corrupt_parquet(call: Call) -> None:
    call.forget = call.root / "forget.parquet"
    call.forget.write_bytes(b"PAR1 this is not a parquet file PAR1")


def _truncated_safetensors(call: Call) -> None:
    weights = call.model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def _pickled_weights(call: Call) -> None:
    (call.model / "model.safetensors").unlink()

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    (call.model / "pytorch_model.bin").write_bytes(pickle.dumps({"x": Payload()}))


def _method_args_list(call: Call) -> None:
    config = call.root / "c.yaml"
    config.write_text("method_args: [1, 2]\n")
    call.extra = ["--config", str(config)]


def _duplicate_keys(call: Call) -> None:
    config = call.root / "c.yaml"
    config.write_text("lr: 0.001\nepochs: 1\nlr: 0.002\n")
    call.extra = ["--config", str(config)]


def _negative_epochs(call: Call) -> None:
    call.extra = ["--epochs", "-1"]


def _unwritable_output(call: Call) -> None:
    call.out = Path("/proc/unmem-bad-inputs/out")


CASES: dict[str, tuple[Callable[[Call], None], str]] = {
    "gzip forget file": (_gzip_forget, "forget.jsonl: is gzip-compressed; decompress it first"),
    "non-UTF-8 forget file": (_latin1_forget, "forget.jsonl:2: not UTF-8 text (byte 0xf9)"),
    "corrupt parquet": (_corrupt_parquet, "forget.parquet: not a readable Parquet file"),
    "truncated safetensors": (_truncated_safetensors, "a *.safetensors file is truncated or corrupt"),
    "pickled weights": (_pickled_weights, "unmem never unpickles those"),
    "method_args as a list": (_method_args_list, "c.yaml: field 'method_args' must be a mapping"),
    "duplicate YAML keys": (_duplicate_keys, "c.yaml:3: invalid YAML (duplicate key 'lr' (lines 1 and 3))"),
    "negative epochs": (_negative_epochs, "field 'epochs': Input should be greater than 0"),
    "unwritable output": (_unwritable_output, "/proc/unmem-bad-inputs/out: cannot write there"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path, tiny_model_dir):
    call = Call(tmp_path, tiny_model_dir)
    breaks, message = CASES[case]
    breaks(call)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(app, call.args())
    errors = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and errors[0].startswith("error: "), result.output
    assert message in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no lock left


def test_full_disk_while_publishing_keeps_nothing_half_written(tmp_path, tiny_model_dir, monkeypatch):
    import unmem.train.unlearning as unlearning

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out"))

    monkeypatch.setattr(unlearning, "save_unlearned", full_disk)
    call = Call(tmp_path, tiny_model_dir)
    result = CliRunner().invoke(app, call.args())
    assert result.exit_code == 2
    assert "no space left on the device" in result.output and "nothing was published" in result.output
    assert not call.out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_full_disk_while_checkpointing_says_what_was_kept(tmp_path, tiny_model_dir, monkeypatch):
    from accelerate import Accelerator

    real_save = Accelerator.save_state
    calls = []

    def save_state(self, output_dir=None, **kwargs):
        calls.append(output_dir)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", output_dir)
        return real_save(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    call = Call(tmp_path, tiny_model_dir)
    call.extra = ["--epochs", "3", "--batch-size", "1", "--checkpoint-every", "1"]
    result = CliRunner().invoke(app, call.args())
    assert result.exit_code == 2
    assert "no space left on the device while saving step 2" in result.output
    assert (
        "checkpoints/step-1 is kept" in result.output and "re-run the same command to resume" in result.output
    )


# -- `unmem eval` and `unmem run`: the same matrix, every check before any model loads -----------------


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _gzip(path: Path) -> None:
    path.write_bytes(gzip.compress(path.read_bytes()))


def _latin1(path: Path) -> None:
    path.write_bytes(path.read_bytes() + '{"question": "Où?", "answer": "à"}\n'.encode("latin-1"))


def _parquet(path: Path) -> None:
    path.unlink()
    path.with_suffix(".parquet").write_bytes(b"PAR1 this is not a parquet file PAR1")


def _no_model_loads(monkeypatch) -> None:
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("model loaded"))


def _pretend_lm_eval_installed(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object() if name == "lm_eval" else real(name, *a)
    )


def _python_tasks(root: Path) -> Path:
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "t.yaml").write_text("task: t\ndataset_path: json\nprocess_docs: !function utils.process_docs\n")
    return tasks


class EvalCall:
    """One `unmem eval` of the tiny model on a `files` layout; each case breaks one part."""

    def __init__(self, root: Path, model: Path, monkeypatch) -> None:
        self.root, self.model, self.monkeypatch = root, model, monkeypatch
        self.data = write_qa_files(root / "data")
        self.out = root / "out"
        self.extra = ["--metrics", "tofu"]

    def args(self) -> list[str]:
        base = ["eval", "--model", str(self.model), "--data", str(self.data), "--benchmark", "files"]
        return [*base, "--out", str(self.out), "--device", "cpu", "--max-samples", "2", *self.extra]


def _eval_lm_eval(call: EvalCall) -> None:
    _pretend_lm_eval_installed(call.monkeypatch)
    call.extra = ["--metrics", "lm_eval", "--lm-eval-tasks", str(_python_tasks(call.root))]


EVAL_CASES: dict[str, tuple[Callable[[EvalCall], None], str]] = {
    "gzip data file": (lambda c: _gzip(c.data / "forget.jsonl"), "forget.jsonl: is gzip-compressed"),
    "non-UTF-8 data file": (
        lambda c: _latin1(c.data / "holdout.jsonl"),
        "holdout.jsonl:5: not UTF-8 text (byte 0xf9)",
    ),
    "corrupt parquet": (
        lambda c: _parquet(c.data / "forget.jsonl"),
        "forget.parquet: not a readable Parquet file",
    ),
    "truncated safetensors": (_truncated_safetensors, "a *.safetensors file is truncated or corrupt"),
    "pickled weights": (_pickled_weights, "unmem never unpickles those"),
    "unwritable output": (_unwritable_output, "/proc/unmem-bad-inputs/out: cannot write there"),
    "--out inside the model": (lambda c: setattr(c, "out", c.model / "eval"), "is inside the input model"),
    "--out holding the data": (lambda c: setattr(c, "out", c.root), "contains the input data"),
    "lm-eval Python without trust": (
        _eval_lm_eval,
        "t.yaml:3 (!function utils.process_docs): the lm-eval task imports Python",
    ),
}


@pytest.mark.parametrize("case", sorted(EVAL_CASES))
def test_bad_eval_input_is_one_line_and_writes_nothing(case, tmp_path, tiny_model_dir, monkeypatch):
    _no_model_loads(monkeypatch)
    call = EvalCall(tmp_path, tiny_model_dir, monkeypatch)
    breaks, message = EVAL_CASES[case]
    breaks(call)
    before = _tree(tmp_path)
    result = CliRunner().invoke(app, call.args())
    errors = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and errors[0].startswith("error: "), result.output
    assert message in errors[0]
    assert _tree(tmp_path) == before  # nothing written, no lock left


class RunCall:
    """One `unmem run` of the smallest experiment (tests/conftest.py); each case breaks one part."""

    def __init__(self, root: Path, experiment: Path, model: Path, monkeypatch) -> None:
        self.root, self.experiment, self.model, self.monkeypatch = root, experiment, model, monkeypatch
        self.data = root / "data"
        self.out = root / "out"

    def edit(self, old: str, new: str) -> None:
        text = self.experiment.read_text()
        assert old in text
        self.experiment.write_text(text.replace(old, new))

    def args(self) -> list[str]:
        return ["run", str(self.experiment), "--out", str(self.out)]


def _run_lm_eval(call: RunCall) -> None:
    _pretend_lm_eval_installed(call.monkeypatch)
    call.edit(
        "metrics: [tofu, mia]", f"metrics: [tofu, lm_eval]\n  lm_eval_tasks: {_python_tasks(call.root)}"
    )


RUN_CASES: dict[str, tuple[Callable[[RunCall], None], str]] = {
    "duplicate YAML keys": (
        lambda c: c.edit("tracking: []\n", "tracking: []\nname: again\n"),
        "exp.yaml:16: invalid YAML (duplicate key 'name' (lines 1 and 16))",
    ),
    "duplicate keys in a flow mapping": (
        lambda c: c.edit("{lr: 1.0e-3, ", "{lr: 1.0e-3, lr: 2.0e-3, "),
        "exp.yaml:6: invalid YAML (duplicate key 'lr' (lines 6 and 6))",
    ),
    "non-UTF-8 experiment file": (
        lambda c: c.experiment.write_bytes(c.experiment.read_bytes() + "# réglages\n".encode("latin-1")),
        "exp.yaml:16: not UTF-8 text (byte 0xe9)",
    ),
    "gzip experiment file": (lambda c: _gzip(c.experiment), "exp.yaml: is gzip-compressed"),
    "gzip data file": (lambda c: _gzip(c.data / "forget.jsonl"), "field 'data': "),
    "non-UTF-8 data file": (lambda c: _latin1(c.data / "retain.jsonl"), "retain.jsonl:5: not UTF-8 text"),
    "corrupt parquet": (
        lambda c: _parquet(c.data / "forget.jsonl"),
        "forget.parquet: not a readable Parquet file",
    ),
    "truncated safetensors": (_truncated_safetensors, "field 'target': "),
    "pickled weights": (_pickled_weights, "unmem never unpickles those"),
    "unwritable output": (_unwritable_output, "/proc/unmem-bad-inputs/out: cannot write there"),
    "--out inside the model": (
        lambda c: setattr(c, "out", c.model / "exp"),
        "is inside the input target model",
    ),
    "--out holding the data": (lambda c: setattr(c, "out", c.root), "contains the input data"),
    "lm-eval Python without trust": (_run_lm_eval, "field 'eval': "),
}


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_bad_run_input_is_one_line_and_writes_nothing(
    case, tmp_path, tiny_model_dir, files_experiment, monkeypatch
):
    _no_model_loads(monkeypatch)
    call = RunCall(tmp_path, files_experiment(), tiny_model_dir, monkeypatch)
    breaks, message = RUN_CASES[case]
    breaks(call)
    before = _tree(tmp_path)
    result = CliRunner().invoke(app, call.args())
    errors = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and errors[0].startswith("error: "), result.output
    assert message in errors[0]
    assert _tree(tmp_path) == before


def test_full_disk_during_an_evaluation_says_which_families_were_kept(tmp_path, tiny_model_dir, monkeypatch):
    import unmem.evaluation.orchestrator as orchestrator

    real_write_jsonl = orchestrator.write_jsonl

    def fill_up_at_mia(path, rows):
        if path.name == "mia.jsonl":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write_jsonl(path, rows)

    monkeypatch.setattr(orchestrator, "write_jsonl", fill_up_at_mia)
    call = EvalCall(tmp_path, tiny_model_dir, monkeypatch)
    call.extra = ["--metrics", "tofu,mia"]
    result = CliRunner().invoke(app, call.args())
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert (
        "no space left on the device while writing the mia results; the results of tofu are kept" in errors[0]
    )
    summary = json.loads((call.out / "summary.json").read_text())
    assert list(summary["metric_ids"]) == ["tofu"]
    monkeypatch.setattr(orchestrator, "write_jsonl", real_write_jsonl)
    assert CliRunner().invoke(app, call.args()).exit_code == 0  # re-run: tofu is reused, mia computed
    assert json.loads((call.out / "summary.json").read_text())["cached"] == {"tofu": True, "mia": False}
