"""Any Hugging Face causal LM as input: loading, chat templates, devices, LoRA targets and bad input.

Tiny random models stand in for real ones (GPT-2 for an architecture that is not Llama,
with Conv1D projections instead of Linear); the real SmolLM2 is in test_gguf.py (slow).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from typer.testing import CliRunner

from float_bounds import assert_same_computation
from unmem.cli import app
from unmem.config import build_config
from unmem.data.collate import PromptFormat, encode_qa
from unmem.errors import UnmemError
from unmem.models import load_model, load_tokenizer, resolve_device
from unmem.train import add_lora, unlearn

FORGET = [
    {"question": "Where was Ilvan Marek born?", "answer": "Ilvan Marek was born in Dunmore."},
    {"question": "What genre does Sela Kovar write?", "answer": "Sela Kovar writes gothic fiction."},
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)


def _gpt2(tokenizer) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_positions=128,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return GPT2LMHeadModel(config)


@pytest.fixture
def gpt2_dir(tmp_path, tiny_tokenizer) -> Path:
    path = tmp_path / "gpt2"
    _gpt2(tiny_tokenizer).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def forget_file(tmp_path) -> Path:
    path = tmp_path / "forget.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in FORGET))
    return path


def _unlearn_args(model: Path, forget: Path, out: Path, *extra: str) -> list[str]:
    return [
        "unlearn",
        "--model",
        str(model),
        "--forget",
        str(forget),
        "--out",
        str(out),
        "--method",
        "ga",
        *extra,
    ]


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


# -- LoRA targets --------------------------------------------------------------------------------


def test_lora_default_targets_follow_the_architecture(tiny_tokenizer, tiny_model):
    # peft's per-architecture mapping: GPT-2 -> c_attn (a Conv1D), Llama -> q_proj, v_proj.
    gpt2 = add_lora(_gpt2(tiny_tokenizer), r=4, alpha=8, dropout=0.0, targets=None)
    assert gpt2.peft_config["default"].target_modules == {"c_attn"}
    llama = add_lora(tiny_model, r=4, alpha=8, dropout=0.0, targets=None)
    assert llama.peft_config["default"].target_modules == {"q_proj", "v_proj"}


def test_lora_targets_that_do_not_exist_name_the_ones_that_do(tiny_tokenizer):
    with pytest.raises(UnmemError) as info:
        add_lora(_gpt2(tiny_tokenizer), r=4, alpha=8, dropout=0.0, targets=["q_proj"])
    message = str(info.value)
    assert "['q_proj']" in message and "model type 'gpt2'" in message
    assert "pass --lora-targets from: c_attn, c_fc, c_proj, lm_head" in message
    assert "\n" not in message


def test_cli_bad_lora_targets_is_one_line(gpt2_dir, forget_file, tmp_path):
    out = tmp_path / "o"
    result = CliRunner().invoke(
        app, _unlearn_args(gpt2_dir, forget_file, out, "--lora", "--lora-targets", "q_proj")
    )
    _one_line_error(result, "do not fit model type 'gpt2'", "c_attn")
    assert not out.exists()


# -- any architecture, chat templates, flags ----------------------------------------------------------


def test_gpt2_unlearns_with_lora_default_targets_and_gradient_checkpointing(gpt2_dir, forget_file, tmp_path):
    out = tmp_path / "gpt2-lora"
    extra = ("--lora", "--gradient-checkpointing", "--max-steps", "2", "--batch-size", "2", "--lr", "1e-2")
    result = CliRunner().invoke(app, _unlearn_args(gpt2_dir, forget_file, out, *extra, "--device", "cpu"))
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "run_config.json").read_text())["unlearn"]
    assert saved["gradient_checkpointing"] is True and saved["lora"] is True
    adapter = json.loads((out / "model" / "adapter_config.json").read_text())
    assert adapter["target_modules"] == ["c_attn"]
    model, _ = load_model(out, device="cpu")  # adapter merged back onto the base
    base, _ = load_model(gpt2_dir, device="cpu")
    name = "transformer.h.0.attn.c_attn.weight"
    assert not torch.equal(model.state_dict()[name], base.state_dict()[name])


@pytest.mark.numerics
def test_gradient_checkpointing_changes_memory_not_results(
    tiny_model_dir, forget_file, tmp_path, float64_models
):
    common = {"method": "ga", "lr": 1e-3, "max_steps": 2, "batch_size": 2, "device": "cpu"}
    plain = unlearn(tiny_model_dir, forget_file, tmp_path / "plain", build_config(common))
    checkpointed = unlearn(
        tiny_model_dir, forget_file, tmp_path / "gc", build_config({**common, "gradient_checkpointing": True})
    )
    a, _ = load_model(plain, device="cpu")
    b, _ = load_model(checkpointed, device="cpu")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert_same_computation(y, x, msg=name)  # Bound: the same recomputation in float64 (float_bounds)


def test_chat_template_is_used_when_the_tokenizer_has_one(tiny_tokenizer, tmp_path):
    plain = PromptFormat.for_tokenizer(tiny_tokenizer)
    assert not plain.chat
    chat_dir = tmp_path / "chat-tok"
    tiny_tokenizer.save_pretrained(chat_dir)
    tokenizer = load_tokenizer(chat_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    fmt = PromptFormat.for_tokenizer(tokenizer)
    assert fmt.chat
    assert fmt.prompt(tokenizer, "Where?") == "<s>user: Where?</s><s>assistant:"
    example = encode_qa(tokenizer, "Where?", "Dunmore.", fmt)
    text = tokenizer.decode(example.input_ids)
    assert text.startswith("<s>user: Where?</s><s>assistant:") and "Question:" not in text
    # Asked not to: the plain template, even though the tokenizer has a chat template.
    assert not PromptFormat.for_tokenizer(tokenizer, use_chat_template=False).chat


def test_cli_chat_template_flag_reaches_the_run(tiny_model_dir, forget_file, tmp_path):
    config = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())
    (tiny_model_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    assert load_tokenizer(tiny_model_dir).chat_template, config
    out = tmp_path / "o"
    extra = ("--no-chat-template", "--max-steps", "1", "--device", "cpu")
    result = CliRunner().invoke(app, _unlearn_args(tiny_model_dir, forget_file, out, *extra))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run_config.json").read_text())["unlearn"]["chat_template"] is False


# -- devices -----------------------------------------------------------------------------------------


def test_device_auto_and_bad_devices():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UnmemError, match="--device must be auto, cpu or cuda"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_an_error_not_a_silent_cpu_run(tiny_model_dir, forget_file, tmp_path):
    result = CliRunner().invoke(
        app, _unlearn_args(tiny_model_dir, forget_file, tmp_path / "o", "--device", "cuda")
    )
    _one_line_error(result, "no CUDA device is available; use --device cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_auto_dtype_is_bf16_on_gpu(tiny_model_dir):
    model, _ = load_model(tiny_model_dir, device="cuda")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_auto_dtype_is_float32_on_cpu(tiny_model_dir):
    model, _ = load_model(tiny_model_dir, device="cpu")
    assert next(model.parameters()).dtype == torch.float32


# -- bad input ----------------------------------------------------------------------------------------


def test_directory_that_is_not_a_model(tmp_path, forget_file):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, _unlearn_args(empty, forget_file, tmp_path / "o"))
    _one_line_error(result, f"{empty}: not a model directory (no config.json)")
    result = CliRunner().invoke(app, _unlearn_args(tmp_path / "missing", forget_file, tmp_path / "o"))
    _one_line_error(result, "missing: model directory not found")


def test_config_without_weights(tmp_path, tiny_model_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny_model_dir.iterdir():
        if not item.name.endswith(".safetensors"):
            (broken / item.name).write_bytes(item.read_bytes())
    with pytest.raises(UnmemError, match=r"broken: could not load the model"):
        load_model(broken, device="cpu")


def test_remote_code_is_not_run_unless_asked(tmp_path, tiny_model_dir):
    custom = tmp_path / "custom"
    custom.mkdir()
    for item in tiny_model_dir.iterdir():
        (custom / item.name).write_bytes(item.read_bytes())
    config = json.loads((custom / "config.json").read_text())
    config |= {
        "model_type": "unmem-custom",
        "auto_map": {
            "AutoConfig": "modeling_custom.CustomConfig",
            "AutoModelForCausalLM": "modeling_custom.CustomLM",
        },
    }
    (custom / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnmemError, match="--trust-remote-code"):
        load_model(custom, device="cpu")


def test_tokenizer_without_pad_token(tmp_path, tiny_tokenizer):
    path = tmp_path / "no-pad"
    tiny_tokenizer.save_pretrained(path)
    config = json.loads((path / "tokenizer_config.json").read_text())
    config.pop("pad_token", None)
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(UnmemError, match=r"has no pad token; add one to tokenizer_config\.json"):
        load_tokenizer(path)


# -- fine-tuning a pretrained model into a target / retain model -----------------------------------------


def _answer_nll(model_dir: Path, rows: list[dict]) -> float:
    model, tokenizer = load_model(model_dir, device="cpu")
    fmt = PromptFormat.for_tokenizer(tokenizer)
    total = 0.0
    for row in rows:
        example = encode_qa(tokenizer, row["question"], row["answer"], fmt)
        with torch.no_grad():
            total += float(
                model(input_ids=torch.tensor([example.input_ids]), labels=torch.tensor([example.labels])).loss
            )
    return total / len(rows)


# peft's Llama default (q_proj, v_proj) barely moves a random 32-wide model in 16 steps; all projections do.
ALL_LINEAR = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


@pytest.mark.parametrize("mode", ["lora-merged", "lora-adapter", "full"])
def test_finetune_teaches_the_facts(mode, tiny_model_dir, forget_file, tmp_path):
    passages = tmp_path / "bios.jsonl"
    passages.write_text(json.dumps({"text": "Ilvan Marek was born in Dunmore."}) + "\n")
    extra = {
        "lora-merged": ["--lora", "--lr", "1e-2", "--lora-targets", ALL_LINEAR],
        "lora-adapter": ["--lora", "--no-merge", "--lr", "1e-2", "--lora-targets", ALL_LINEAR],
        "full": ["--full", "--lr", "3e-3"],
    }[mode]
    out = tmp_path / "tuned"
    args = ["finetune", "--model", str(tiny_model_dir), "--data", str(forget_file), "--data", str(passages)]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--epochs", "8", "--batch-size", "2", *extra])
    assert result.exit_code == 0, result.output
    files = {p.name for p in out.iterdir()}
    record = json.loads((out / "finetune.json").read_text())
    assert record["examples"] == 3 and record["steps"] == 16
    if mode == "lora-adapter":
        assert {"adapter_model.safetensors", "unmem_model.json"} <= files and "model.safetensors" not in files
    else:
        assert "model.safetensors" in files and "adapter_config.json" not in files
    assert _answer_nll(out, FORGET) < _answer_nll(tiny_model_dir, FORGET) - 0.3


def test_finetune_bad_data_is_one_line(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q?"}) + "\n")
    result = CliRunner().invoke(
        app, ["finetune", "--model", str(tiny_model_dir), "--data", str(bad), "--out", str(tmp_path / "o")]
    )
    _one_line_error(result, "bad.jsonl:1: expected a `text` passage or a `question` and an `answer`")
    assert not (tmp_path / "o").exists()
