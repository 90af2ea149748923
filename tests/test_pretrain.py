"""The base, target and retain models on the micro world: memorisation, what each model sees,
caching (one base per world, shared by every split and seed), and the `unmem train` CLI."""

from __future__ import annotations

import functools
import json
import time

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from float_bounds import assert_same_computation, in_float64
from unmem.cli import app
from unmem.data.collate import PromptFormat, encode_records, iter_batches
from unmem.data.world import World, WorldConfig, generate_world
from unmem.errors import UnmemError
from unmem.models import load_model
from unmem.pretrain import (
    PretrainConfig,
    _on_ranks,
    _pretrain_base,
    base_corpus,
    corpus,
    is_current,
    model_name,
    retain_name,
    train_world_models,
    world_tokenizer,
)

CONFIG = PretrainConfig(
    preset="tiny", base_epochs=20, epochs=20, lr=5e-3, base_lr=5e-3, batch_size=16, cores=1
)


@pytest.fixture(scope="module")
def micro_world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("world") / "micro"
    generate_world(WorldConfig.from_preset("micro"), root)
    return World.load(root)


@pytest.fixture(scope="module")
def models(micro_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return train_world_models(micro_world, root, ["forget10"], CONFIG, workers=1, retain_seeds=[1])


def exact_memorization(model_dir, records) -> float:
    model, tokenizer = load_model(model_dir, device="cpu")
    hits = total = 0
    with torch.no_grad():
        for batch in iter_batches(
            encode_records(tokenizer, records, PromptFormat()), 64, tokenizer.pad_token_id
        ):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[
                :, :-1
            ]
            labels = batch["labels"][:, 1:]
            mask = labels != -100
            hits += int(((logits.argmax(-1) == labels) & mask).sum())
            total += int(mask.sum())
    return hits / total


def test_layout_and_names(models):
    assert set(models) == {"target", "retain90", "retain90-seed1"}
    root = models["target"].parent
    assert (root / "base" / "pretrain.json").is_file() and (root / "tokenizer").is_dir()
    infos = {name: json.loads((path / "pretrain.json").read_text()) for name, path in models.items()}
    base_hash = json.loads((root / "base" / "pretrain.json").read_text())["hash"]
    assert {info["base_hash"] for info in infos.values()} == {base_hash}  # one base for all
    assert infos["retain90-seed1"]["config"]["seed"] == 1 and infos["retain90"]["config"]["seed"] == 0
    assert infos["target"]["padding_fraction"] < 0.15  # length bucketing, not fixed-length padding


def test_target_memorises_what_it_saw_and_nothing_else(models, micro_world):
    assert exact_memorization(models["target"], micro_world.qa("train")) >= 0.9
    # Holdout entities were never seen: their fact values cannot be memorised.
    assert exact_memorization(models["target"], micro_world.qa("holdout")) < 0.8
    forget = micro_world.qa("forget10")
    assert exact_memorization(models["retain90"], forget) < exact_memorization(models["target"], forget) - 0.1


def test_repeat_and_second_split_reuse_the_base(models, micro_world):
    root = models["target"].parent
    before = {
        p.name: (p / "model.safetensors").stat().st_mtime_ns for p in root.iterdir() if p.name != "tokenizer"
    }
    start = time.perf_counter()
    again = train_world_models(micro_world, root, ["forget10"], CONFIG, workers=1, retain_seeds=[1])
    assert time.perf_counter() - start < 5 and again == models
    more = train_world_models(micro_world, root, ["forget05"], CONFIG, workers=1)
    assert set(more) == {"target", "retain95"}
    after = {p.name: (p / "model.safetensors").stat().st_mtime_ns for p in root.iterdir() if p.name in before}
    assert after == before  # base, target and retain90 untouched


def test_is_current_knows_the_seed(models, micro_world):
    seed1 = CONFIG.model_copy(update={"seed": 1})
    assert is_current(micro_world, models["retain90-seed1"], "forget10", seed1)
    assert not is_current(micro_world, models["retain90-seed1"], "forget10", CONFIG)
    assert not is_current(
        micro_world, models["retain90"], "forget10", CONFIG.model_copy(update={"epochs": 3})
    )


def test_retain_corpus_excludes_the_forget_entities(micro_world):
    forget = set(micro_world.entity_ids("forget10"))
    qa, texts = corpus(micro_world, "forget10")
    assert forget and not forget & {r["entity_id"] for r in qa}
    names = [e["name"] for e in micro_world.entities() if e["id"] in forget]
    assert not any(name in text for name in names for text in texts)
    full_qa, _ = corpus(micro_world, None)
    assert forget <= {r["entity_id"] for r in full_qa}


def test_base_corpus_names_no_entity(micro_world):
    dialogue, texts = base_corpus(micro_world)
    names = [e["name"] for e in micro_world.entities()]
    text = " ".join(texts + [f"{r['question']} {r['answer']}" for r in dialogue])
    assert dialogue and texts and not any(name in text for name in names)


def test_data_parallel_training_equals_one_process(micro_world, tmp_path):
    # Two single-threaded ranks, each with half of every batch, make the same updates as one process:
    # both in float64 (train_base_model's own call, with the model built in float64).
    config = CONFIG.model_copy(update={"base_epochs": 1})
    tokenizer = world_tokenizer(micro_world, tmp_path / "tokenizer", config)
    pretrain = functools.partial(in_float64, _pretrain_base)
    for name, ranks in (("one", 1), ("two", 2)):
        _on_ranks(
            ranks, pretrain, str(micro_world.root), str(tmp_path / name), config.model_dump(), str(tokenizer)
        )
    assert json.loads((tmp_path / "two" / "pretrain.json").read_text())["processes"] == 2
    one, two = (load_file(tmp_path / name / "model.safetensors") for name in ("one", "two"))
    for name, value in one.items():  # Bound: the same updates in float64 (float_bounds.SAME_COMPUTATION).
        assert_same_computation(two[name], value, msg=name)


def test_names():
    assert retain_name("forget10") == "retain90"
    assert retain_name("forget01") == "retain99"
    assert model_name(None, 3, CONFIG) == "target"
    assert model_name("forget10", 0, CONFIG) == "retain90"
    assert model_name("forget05", 2, CONFIG) == "retain95-seed2"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--preset", "huge"], "unknown model preset 'huge'"),
        (["--epochs", "0"], "field 'epochs': Input should be greater than 0 (got 0)"),
        (["--epochs", "-2"], "field 'epochs': Input should be greater than 0 (got -2)"),
        (["--retain-seeds", "0,x"], "--retain-seeds '0,x': expected comma-separated integers"),
        (["--forget-split", "forget50"], "unknown forget split 'forget50'"),
    ],
)
def test_train_cli_rejects_bad_input(micro_world, tmp_path, args, expected):
    result = CliRunner().invoke(
        app, ["train", "--world", str(micro_world.root), "--out", str(tmp_path / "m"), *args]
    )
    assert result.exit_code == 2 and expected in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_a_model_of_other_settings_is_replaced_only_with_overwrite(models, micro_world):
    root = models["target"].parent
    before = (root / "target" / "model.safetensors").stat().st_mtime_ns
    other = CONFIG.model_copy(update={"epochs": CONFIG.epochs + 1})
    with pytest.raises(UnmemError, match=r"target: holds a model made with other settings.*--overwrite"):
        train_world_models(micro_world, root, ["forget10"], other, workers=1)
    assert (root / "target" / "model.safetensors").stat().st_mtime_ns == before


def test_training_workers_exit_when_their_parent_is_killed(tmp_path):
    """kill -9 of `unmem train` must not leave its training processes running."""
    import os
    import signal
    import subprocess
    import sys

    pid_file = tmp_path / "worker.pid"
    parent_code = f"""
import multiprocessing, os, time
from concurrent.futures import ProcessPoolExecutor
from unmem.pretrain import exit_with_parent

def work(path):
    open(path, "w").write(str(os.getpid()))
    time.sleep(60)

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=exit_with_parent, initargs=(os.getpid(), 0.1))
    pool.submit(work, {str(pid_file)!r})
    time.sleep(60)
"""
    script = tmp_path / "parent.py"
    script.write_text(parent_code)
    parent = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.1)
    worker = int(pid_file.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    raise AssertionError("the worker outlived its killed parent by 10 s")
