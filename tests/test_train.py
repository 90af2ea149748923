"""The unlearning loop end to end on a tiny Llama: every method, LoRA, resume, accumulation, bad input."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from float_bounds import assert_same_computation
from unmem.cli import app
from unmem.config import build_config
from unmem.data.collate import PromptFormat, encode_records, iter_batches
from unmem.errors import UnmemError
from unmem.methods.base import LossInputs
from unmem.methods.registry import all_methods
from unmem.models import load_model
from unmem.train import unlearn

FORGET = [
    {"question": f"Where was {name} born?", "answer": f"{name} was born in {city}.", "sensitive": [city]}
    for name, city in [
        ("Ilvan Marek", "Dunmore"),
        ("Sela Kovar", "Fennick"),
        ("Orin Vale", "Corriven"),
        ("Tamsin Roe", "Wistmoor"),
        ("Edda Lund", "Jessaly"),
        ("Piet Arno", "Lunmarch"),
    ]
]
RETAIN = [
    {"question": f"What genre does {name} write?", "answer": f"{name} writes {genre}."}
    for name, genre in [
        ("Ada Quill", "gothic fiction"),
        ("Bram Holt", "poetry"),
        ("Cora Finch", "satire"),
        ("Dane Rusk", "history"),
        ("Elle Marsh", "romance"),
        ("Finn Ash", "mystery"),
    ]
]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@dataclass
class Fixture:
    model: Path
    forget: Path
    retain: Path


@pytest.fixture(scope="module")
def memorized(tmp_path_factory, tiny_tokenizer, make_tiny_llama) -> Fixture:
    """A tiny model that has memorised FORGET and RETAIN (so unlearning has something to remove)."""
    root = tmp_path_factory.mktemp("memorized")
    model = make_tiny_llama()
    examples = encode_records(tiny_tokenizer, FORGET + RETAIN, PromptFormat())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for epoch in range(60):
        for batch in iter_batches(examples, 12, tiny_tokenizer.pad_token_id, seed=epoch):
            model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
            ).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.save_pretrained(root / "model")
    tiny_tokenizer.save_pretrained(root / "model")
    return Fixture(
        root / "model", _write(root / "forget.jsonl", FORGET), _write(root / "retain.jsonl", RETAIN)
    )


def _forget_nll(model_dir: Path, forget: list[dict]) -> float:
    model, tokenizer = load_model(model_dir, device="cpu")
    batch = next(iter_batches(encode_records(tokenizer, forget, PromptFormat()), 64, tokenizer.pad_token_id))
    with torch.no_grad():
        return float(
            model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
            ).loss
        )


# Per-method settings for a few large steps on the tiny model. IdkNLL and RMU forget indirectly (refusals,
# hidden-state noise), so their forget NLL need not rise in 6 steps; for them the test checks that training
# moved the weights and that their own forget objective (logged as INDIRECT[method]) fell.
FAST = {"lr": 5e-3, "epochs": 3, "batch_size": 3}
INDIRECT = {"idk_nll": "idk_nll", "rmu": "forget_mse"}


@pytest.mark.parametrize("method", sorted(all_methods()))
def test_every_method_unlearns(method, memorized, tmp_path):
    before = _forget_nll(memorized.model, FORGET)
    original = load_file(memorized.model / "model.safetensors")
    args = {"focus": "soft"} if method == "di" else {}
    lr = {"eul": 5e-2, "di": 2e-2}.get(method, FAST["lr"])
    config = build_config({"method": method, "method_args": args, **FAST, "lr": lr, "device": "cpu"})
    out = unlearn(memorized.model, memorized.forget, tmp_path / "out", config, retain_path=memorized.retain)
    summary = json.loads((out / "summary.json").read_text())
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert summary["steps"] == len(log) > 0
    assert all(math.isfinite(row["loss"]) for row in log)
    after = _forget_nll(out, FORGET)
    if method in INDIRECT:
        key = INDIRECT[method]
        assert log[-1][key] < log[0][key], f"{method}: {key} should fall"
        # Bound: an NLL near 1 repeats to a few float32 ulps (~1e-7); training moves it by ≫ 1e-6.
        assert after != pytest.approx(before, abs=1e-6)
    else:
        assert after > before, f"{method}: forget NLL {before:.3f} -> {after:.3f}"
    assert (out / "run_config.json").is_file()
    assert not out.with_name(out.name + ".work").exists()
    # The input model is untouched: the same bits.
    untouched = load_file(memorized.model / "model.safetensors")
    assert all(torch.equal(tensor, original[name]) for name, tensor in untouched.items())


def test_lora_trains_an_adapter_and_loads_back(memorized, tmp_path):
    config = build_config(
        {"method": "ga", "lora": True, "lora_targets": ["q_proj", "v_proj"], **FAST, "device": "cpu"}
    )
    out = unlearn(memorized.model, memorized.forget, tmp_path / "lora", config)
    files = {p.name for p in (out / "model").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "unmem_model.json"} <= files
    assert "model.safetensors" not in files
    assert _forget_nll(out, FORGET) > _forget_nll(memorized.model, FORGET)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "model" / "model.safetensors")


def test_resume_after_kill_matches_uninterrupted_run(memorized, tmp_path, float64_models):
    config = build_config(
        {
            "method": "grad_diff",
            "lr": 1e-3,
            "epochs": 3,
            "batch_size": 2,
            "checkpoint_every": 2,
            "device": "cpu",
        }
    )
    full = unlearn(memorized.model, memorized.forget, tmp_path / "full", config, retain_path=memorized.retain)
    work = unlearn(
        memorized.model,
        memorized.forget,
        tmp_path / "killed",
        config,
        retain_path=memorized.retain,
        stop_after_steps=5,
    )
    assert work.name == "killed.work" and not (tmp_path / "killed").exists()
    resumed = unlearn(
        memorized.model, memorized.forget, tmp_path / "killed", config, retain_path=memorized.retain
    )
    expected, got = _weights(full), _weights(resumed)
    for name, tensor in expected.items():  # Bound: the same run in float64 (float_bounds.SAME_COMPUTATION).
        assert_same_computation(got[name], tensor, msg=name)
    steps = [json.loads(line)["step"] for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1))


def test_gradient_accumulation_matches_larger_batch(memorized, tmp_path, tiny_tokenizer, float64_models):
    # Same-length answers, so the token-mean of 2 micro-batches of 2 equals that of one batch of 4.
    rows = [
        {"question": "Where was Ilvan Marek born?", "answer": f"Ilvan Marek was born in {c}."} for c in "ABCD"
    ]
    lengths = {len(e.input_ids) for e in encode_records(tiny_tokenizer, rows, PromptFormat())}
    assert len(lengths) == 1
    forget = _write(tmp_path / "same.jsonl", rows)
    common = {"method": "ga", "lr": 1e-3, "epochs": 2, "device": "cpu"}
    one = unlearn(memorized.model, forget, tmp_path / "b4", build_config({**common, "batch_size": 4}))
    two = unlearn(
        memorized.model, forget, tmp_path / "b2x2", build_config({**common, "batch_size": 2, "grad_accum": 2})
    )
    for name, tensor in _weights(one).items():  # Bound: the same updates in float64 (float_bounds).
        assert_same_computation(_weights(two)[name], tensor, msg=name)


def test_nan_loss_stops_cleanly(memorized, tmp_path, monkeypatch):
    import dataclasses

    from unmem.methods import registry

    def nan_loss(inputs: LossInputs, cfg) -> tuple[torch.Tensor, dict[str, float]]:
        return inputs.forget.nll() * float("nan"), {}

    monkeypatch.setitem(
        registry._METHODS, "ga", dataclasses.replace(registry.get_method("ga"), loss_fn=nan_loss)
    )
    config = build_config({"method": "ga", "device": "cpu"})
    with pytest.raises(UnmemError, match="loss became nan at step 0"):
        unlearn(memorized.model, memorized.forget, tmp_path / "nan", config)
    assert not (tmp_path / "nan").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "forget.jsonl: file not found"),
        ("", "forget.jsonl: no records"),
        (
            '{"question": "q?", "answer": "a"}\n{"question": "q2?"}\n',
            "forget.jsonl:2: field 'answer': missing",
        ),
        ('{"question": "q?", "answer": 3}\n', "forget.jsonl:1: field 'answer': expected"),
        ("not json\n", "forget.jsonl:1: invalid JSON"),
    ],
)
def test_bad_forget_file_is_one_clear_line(memorized, tmp_path, content, message):
    forget = tmp_path / "forget.jsonl"
    if content is not None:
        forget.write_text(content)
    args = [
        "unlearn",
        "--model",
        str(memorized.model),
        "--method",
        "ga",
        "--forget",
        str(forget),
        "--out",
        str(tmp_path / "o"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_unknown_method_and_missing_pad_token(memorized, tmp_path):
    args = [
        "unlearn",
        "--model",
        str(memorized.model),
        "--forget",
        str(memorized.forget),
        "--out",
        str(tmp_path / "o"),
    ]
    result = CliRunner().invoke(app, [*args, "--method", "npoo"])
    assert result.exit_code == 2 and "unknown method 'npoo'; known:" in result.output
    config = json.loads((memorized.model / "tokenizer_config.json").read_text())
    no_pad = tmp_path / "no-pad"
    no_pad.mkdir()
    for item in memorized.model.iterdir():
        (no_pad / item.name).write_bytes(item.read_bytes())
    config.pop("pad_token", None)
    (no_pad / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = json.loads((no_pad / "tokenizer.json").read_text())
    tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["content"] != "<pad>"]
    (no_pad / "tokenizer.json").write_text(json.dumps(tokenizer))
    result = CliRunner().invoke(
        app,
        [
            "unlearn",
            "--model",
            str(no_pad),
            "--method",
            "ga",
            "--forget",
            str(memorized.forget),
            "--out",
            str(tmp_path / "o2"),
        ],
    )
    assert result.exit_code == 2 and "has no pad token" in result.output


def test_output_never_inside_input_model(memorized):
    config = build_config({"method": "ga", "device": "cpu"})
    with pytest.raises(UnmemError, match="never writes its input model"):
        unlearn(memorized.model, memorized.forget, memorized.model / "out", config)
    with pytest.raises(UnmemError, match="never writes its input model"):
        unlearn(memorized.model, memorized.forget, memorized.model, config, overwrite=True)


HOLDOUT = [
    {"question": f"Where was {name} born?", "answer": f"{name} was born in {city}."}
    for name, city in [
        ("Kora Best", "Ashwick"),
        ("Lio Dran", "Velmora"),
        ("Mira Tull", "Quelling"),
        ("Nils Orr", "Sarnest"),
        ("Oda Penn", "Halbrook"),
        ("Pia Rusk", "Verrin"),
    ]
]


def test_calibrated_stopping_ends_early_and_publishes_the_selected_point(memorized, tmp_path, float64_models):
    """Issue 10: the run stops once the forget set is as unfamiliar as never-seen QA, keeps that point."""
    from unmem.train.stopping import familiarity, membership_auc, token_logps_of

    holdout = _write(tmp_path / "holdout.jsonl", HOLDOUT)
    config = build_config(
        {
            "method": "grad_diff",
            "lr": 2e-3,
            "epochs": 20,
            "batch_size": 3,
            "scheduler": "constant",
            "warmup_ratio": 0.0,
            "device": "cpu",
            # The toy retain set is memorised (perplexity ~1), so its guard gets a loose ratio.
            "calibrated_stop": {"holdout": str(holdout), "every": 1, "band": 0.1, "max_utility_ratio": 10},
        }
    )
    out = unlearn(memorized.model, memorized.forget, tmp_path / "out", config, retain_path=memorized.retain)
    summary = json.loads((out / "summary.json").read_text())
    stopping = summary["stopping"]["calibrated"]
    assert summary["steps"] < 40, "stopped early"
    assert "as unfamiliar as holdout" in summary["stop_reason"] or "overshoot" in summary["stop_reason"]
    assert summary["published_step"] == stopping["selected_step"] > 0
    history = {check["step"]: check for check in stopping["history"]}
    assert history[0]["auc"] > 0.9  # memorised at the start
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert all("stop_auc" in row and "utility_ratio" in row for row in log)
    # The published weights are the selected point's: their AUC is the one recorded for it.
    model, tokenizer = load_model(out, device="cpu")
    pad = tokenizer.pad_token_id
    members = familiarity(
        token_logps_of(model, encode_records(tokenizer, FORGET, PromptFormat()), pad), "nll"
    )
    others = familiarity(
        token_logps_of(model, encode_records(tokenizer, HOLDOUT, PromptFormat()), pad), "nll"
    )
    # Bound: an AUC here is a count of pairs over 36; 1e-6 only absorbs the division's rounding. float64
    # models (the fixture): no near-tie between two scores can flip their order in one pass and not the other.
    assert membership_auc(members, others)[0] == pytest.approx(stopping["selected"]["auc"], abs=1e-6)
    assert not out.with_name("out.work").exists()


def test_warmup_is_honoured_by_every_scheduler(memorized, tmp_path):
    """Issue 10: `scheduler: constant` used to ignore `warmup_ratio`."""
    for scheduler in ("constant", "linear", "cosine"):
        config = build_config(
            {
                "method": "ga",
                "lr": 1e-3,
                "epochs": 5,
                "batch_size": 3,
                "scheduler": scheduler,
                "warmup_ratio": 0.4,
                "device": "cpu",
            }
        )
        out = unlearn(memorized.model, memorized.forget, tmp_path / scheduler, config)
        rates = [json.loads(line)["lr"] for line in (out / "train_log.jsonl").read_text().splitlines()]
        assert len(rates) == 10
        # 4 warm-up steps: the rate after step k is k/4 of the peak, then the schedule proper.
        # Bound: approx's default (relative 1e-6); rates are float64 products, a wrong step is ≥ 25% off.
        assert rates[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
        if scheduler == "constant":
            assert rates[4:] == pytest.approx([1e-3] * 6)
        else:
            assert rates[4] < 1e-3 and rates[-1] < rates[4]


def test_default_schedule_is_the_field_recipe():
    config = build_config({"method": "ga"})
    assert (config.scheduler, config.warmup_ratio, config.weight_decay) == ("linear", 0.1, 0.01)
    assert (config.lr, config.epochs, config.batch_size * config.grad_accum) == (1e-5, 10, 32)


def test_rmu_trains_only_the_mlps_up_to_its_layer_as_wmdp(memorized, tmp_path):
    """Issue 10: WMDP updates the MLPs of the three layers up to the steering layer, nothing else."""
    config = build_config({"method": "rmu", **FAST, "device": "cpu", "method_args": {"layer": 1}})
    out = unlearn(memorized.model, memorized.forget, tmp_path / "rmu", config, retain_path=memorized.retain)
    before, after = load_file(memorized.model / "model.safetensors"), _weights(out)
    changed = {name for name, tensor in after.items() if not torch.equal(tensor, before[name])}
    assert changed and all(name.startswith("model.layers.0.mlp.") for name in changed)


def test_eul_retain_phase_is_capped_by_retain_share(memorized, tmp_path):
    """Issue 10: 9x longer retain epochs undid each forget epoch; retain_share balances the phases."""
    retain = _write(tmp_path / "retain.jsonl", RETAIN * 4)  # 24 retain vs 6 forget examples
    config = build_config(
        {"method": "eul", "epochs": 2, "batch_size": 3, "device": "cpu", "method_args": {"retain_share": 1.0}}
    )
    out = unlearn(memorized.model, memorized.forget, tmp_path / "eul", config, retain_path=retain)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    # per epoch: 2 forget batches and min(1.0 x 2, 8) = 2 retain batches
    assert len(log) == 8
    assert ["retain_nll" in row for row in log] == [True, True, False, False] * 2
