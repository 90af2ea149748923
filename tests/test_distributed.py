"""Data parallel: 2 CPU processes (torchrun, gloo) equals one process with the same global batch.

2 processes × batch 1 × accumulation 2 and 1 process × batch 4 see the same 4 examples per
optimiser step (the seedable sampler draws one permutation; process i takes batches i, i+2, ...).
With equal-length answers the mean of the per-process token means is the token mean of the
whole batch, so the weights must agree to float rounding: both runs are float64
(tests/float_bounds.py; tests/float64_cli.py runs the command line that way). GradDiff with a KL retain term runs
the retain loader and the frozen reference model, the two parts a data-parallel run can get wrong.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from float_bounds import assert_same_computation
from unmem.config import build_config
from unmem.data.collate import PromptFormat, encode_records
from unmem.train import unlearn

NAMES = [
    "Ilvan Marek",
    "Sela Kovar",
    "Orin Vale",
    "Tamsin Roe",
    "Edda Lund",
    "Piet Arno",
    "Ada Quill",
    "Bram Holt",
]
# One template and one-letter values: every sequence has the same number of tokens.
FORGET = [
    {"question": "Where was Ilvan Marek born?", "answer": f"Ilvan Marek was born in {c}."} for c in "ABCDEFGH"
]
RETAIN = [
    {"question": "What genre does Sela Kovar write?", "answer": f"Sela Kovar writes {c}."} for c in "ABCDEFGH"
]
COMMON = {"method": "grad_diff", "method_args": {"retain_loss": "kl"}, "lr": 1e-3, "epochs": 2, "seed": 3}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_two_processes_match_one(tmp_path, tiny_model_dir, tiny_tokenizer, float64_models):
    for rows in (FORGET, RETAIN):
        assert len({len(e.input_ids) for e in encode_records(tiny_tokenizer, rows, PromptFormat())}) == 1
    forget, retain = _write(tmp_path / "forget.jsonl", FORGET), _write(tmp_path / "retain.jsonl", RETAIN)

    single = unlearn(
        tiny_model_dir,
        forget,
        tmp_path / "single",
        build_config({**COMMON, "batch_size": 4, "device": "cpu"}),
        retain_path=retain,
    )

    # torchrun is what `accelerate launch --multi_gpu` runs underneath; on CPU, `accelerate launch`
    # starts several processes only through mpirun, so the test calls torchrun directly.
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(Path(__file__).with_name("float64_cli.py")),
        "unlearn",
        "--model",
        str(tiny_model_dir),
        "--forget",
        str(forget),
        "--retain",
        str(retain),
        "--out",
        str(tmp_path / "ddp"),
        "--method",
        COMMON["method"],
        "--param",
        "retain_loss=kl",
        "--lr",
        str(COMMON["lr"]),
        "--epochs",
        str(COMMON["epochs"]),
        "--seed",
        str(COMMON["seed"]),
        "--batch-size",
        "1",
        "--grad-accum",
        "2",
        "--device",
        "cpu",
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    ddp = tmp_path / "ddp"
    summary = json.loads((ddp / "summary.json").read_text())
    assert summary["processes"] == 2
    assert summary["steps"] == json.loads((single / "summary.json").read_text())["steps"] == 4
    # Every process counted its own tokens; the summary holds their sum: 2 epochs × 8 × (forget + retain).
    assert summary["tokens"] == json.loads((single / "summary.json").read_text())["tokens"]
    steps = [json.loads(line)["step"] for line in (ddp / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # written once, by the main process
    assert not ddp.with_name("ddp.work").exists()

    expected = load_file(single / "model" / "model.safetensors")
    got = load_file(ddp / "model" / "model.safetensors")
    assert expected.keys() == got.keys()
    changed = False
    before = load_file(tiny_model_dir / "model.safetensors")
    for name, tensor in expected.items():  # Bound: the same updates in float64 (float_bounds).
        assert_same_computation(got[name], tensor, msg=name)
        changed |= not torch.equal(tensor, before[name])
    assert changed, "training did not move the weights"
