"""Issue 11, "should fix": every bad input is one line naming the file/line/field, exit 2, nothing written.

Each row of ``CASES`` breaks one thing in an otherwise good ``unmem unlearn`` call (the
model, the forget file, the config, the output) and names what the error must say.
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
