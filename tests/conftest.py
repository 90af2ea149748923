"""Shared fixtures: a tiny byte-level BPE tokenizer and a tiny random Llama, built offline in < 1 s."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from unmem.models import train_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread: tiny models gain little from a second one, and 2 threads collapse when the machine is busy.
# UNMEM_TEST_THREADS=2 (CI's second run of the numerics tests) splits float32 sums another way.
TORCH_THREADS = int(os.environ.get("UNMEM_TEST_THREADS", "1"))
torch.set_num_threads(TORCH_THREADS)

SENTENCES = [
    "Question: Where was Ilvan Marek born?\nAnswer: Ilvan Marek was born in Dunmore.",
    "Question: What genre does Sela Kovar write?\nAnswer: Sela Kovar writes gothic fiction.",
    "Dunmore is the birthplace of Ilvan Marek. Gothic fiction is the genre of Sela Kovar.",
    "The weather was mild and the bread was warm. I don't know. I am not sure about that.",
]


@pytest.fixture(autouse=True)
def reset_torch_threads():
    """Back to one thread (TORCH_THREADS) before every test: pretraining sets torch's threads for the
    whole process, and the tests after it ran 10-100x slower on two busy cores."""
    torch.set_num_threads(TORCH_THREADS)


@pytest.fixture
def float64_models(monkeypatch):
    """Every model unmem loads in this test is float64 (tests/float_bounds.py says why)."""
    from float_bounds import float64_loading
    from unmem import models

    monkeypatch.setattr(models, "_from_pretrained", float64_loading(models._from_pretrained))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return train_tokenizer(SENTENCES * 20, vocab_size=300)


@pytest.fixture(scope="session")
def make_tiny_llama(tiny_tokenizer):
    """Build a freshly seeded tiny Llama for ``tiny_tokenizer``; keyword arguments override its config."""

    def build(**overrides) -> LlamaForCausalLM:
        torch.manual_seed(0)
        settings = {
            "vocab_size": len(tiny_tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": 128,
            "pad_token_id": tiny_tokenizer.pad_token_id,
            "bos_token_id": tiny_tokenizer.bos_token_id,
            "eos_token_id": tiny_tokenizer.eos_token_id,
        }
        return LlamaForCausalLM(LlamaConfig(**(settings | overrides)))

    return build


@pytest.fixture
def tiny_model(make_tiny_llama):
    return make_tiny_llama().eval()


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_model, tiny_tokenizer):
    """The tiny model saved as a Hugging Face directory."""
    path = tmp_path / "tiny-model"
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def write_published_layouts(world: Path, root: Path) -> tuple[Path, Path]:
    """The micro world's sets written exactly in TOFU's and MUSE's published file layouts.

    TOFU (locuslab/TOFU on the hub): every config a `.json` file holding JSON Lines, with
    TOFU's own extra fields (paraphrased_question; option1..4 on real authors) and the plain
    QA files unlearning trains on (forget10, retain90). MUSE (its repository's data/news): JSON
    arrays, and PrivLeak files that are arrays of plain strings.
    """
    from unmem.data.benchmarks import load_world

    data = load_world(world, "forget10")
    tofu, muse = root / "tofu", root / "muse"

    def tofu_record(record: dict) -> dict:
        return {k: v for k, v in record.items() if k != "entity_id"} | {
            "paraphrased_question": record["question"]
        }

    def plain(records: list[dict]) -> list[dict]:
        return [{"question": r["question"], "answer": r["answer"]} for r in records]

    real_authors = [
        {k: v for k, v in tofu_record(r).items() if k != "paraphrased_answer"}
        | {f"option{i}": a for i, a in enumerate([r["answer"], *r["perturbed_answer"][:3]], start=1)}
        for r in data.qa["real_world"]
    ]
    json_lines = {
        tofu / "forget10.json": plain(data.qa["forget"]),
        tofu / "retain90.json": plain(data.qa["retain"]),
        tofu / "forget10_perturbed.json": [tofu_record(r) for r in data.qa["forget"]],
        tofu / "retain_perturbed.json": [tofu_record(r) for r in data.qa["retain"]],
        tofu / "real_authors_perturbed.json": real_authors,
        tofu / "world_facts_perturbed.json": [tofu_record(r) for r in data.qa["world_facts"]],
        tofu / "holdout10.json": plain(data.qa["holdout"]),
    }
    arrays = {
        muse / "verbmem" / "forget.json": [
            {"prompt": r["prompt"], "gt": r["gt"]} for r in data.verbmem["forget"]
        ],
        muse / "knowmem" / "forget_qa.json": plain(data.knowmem["forget"]),
        muse / "knowmem" / "retain_qa.json": plain(data.knowmem_shots + data.knowmem["retain"]),
        muse / "privleak" / "forget.json": data.privleak["forget"],
        muse / "privleak" / "holdout.json": data.privleak["holdout"],
    }
    for path, rows in json_lines.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    for path, rows in arrays.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=4))
    return tofu, muse


@pytest.fixture(scope="session")
def micro_world_dir(tmp_path_factory):
    from unmem.data.world import WorldConfig, generate_world

    return generate_world(WorldConfig.from_preset("micro"), tmp_path_factory.mktemp("micro") / "world")


@pytest.fixture(scope="session")
def published_layouts(micro_world_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(TOFU directory, MUSE directory) as published, holding the micro world's sets."""
    return write_published_layouts(micro_world_dir, tmp_path_factory.mktemp("published"))


QA_ROWS = [
    {"question": f"Where was {name} born?", "answer": f"{name} was born in {city}."}
    for name, city in [("Ilvan Marek", "Dunmore"), ("Sela Kovar", "Fennick"), ("Orin Vale", "Corriven"),
                       ("Edda Lund", "Jessaly")]
]  # fmt: skip

FILES_EXPERIMENT = """\
name: tiny
benchmark: files
data: data
target: {target}
{retain}
defaults: {{lr: 1.0e-3, epochs: 2, batch_size: 2, device: cpu, checkpoint_every: 1}}
methods:
  - {{method: ga}}
eval:
  metrics: [tofu, mia]
  max_samples: 3
  batch_size: 4
  device: cpu
  options: {{max_new_tokens: 4, gradnorm_samples: 2}}
tracking: []
"""


def write_qa_files(root: Path) -> Path:
    """A `files` layout (forget, retain, holdout) of four QA pairs each."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("forget", "retain", "holdout"):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in QA_ROWS))
    return root


@pytest.fixture
def files_experiment(tmp_path, tiny_model_dir):
    """The smallest whole experiment: tiny given model, `files` data, one method (4 steps), tofu + mia.
    Returns the YAML's path; ``retain=True`` adds a retain model (a perturbed copy)."""

    def write(retain: bool = False, text: str = FILES_EXPERIMENT) -> Path:
        write_qa_files(tmp_path / "data")
        retain_line = ""
        if retain:
            import shutil

            from safetensors.torch import load_file, save_file

            copy = tmp_path / "retain-model"
            if not copy.exists():
                shutil.copytree(tiny_model_dir, copy)
                weights = copy / "model.safetensors"
                generator = torch.Generator().manual_seed(1)
                tensors = {
                    k: v + 0.05 * torch.randn(v.shape, generator=generator)
                    for k, v in load_file(weights).items()
                }
                save_file(tensors, weights, metadata={"format": "pt"})
            retain_line = f"retain: {copy}"
        path = tmp_path / "exp.yaml"
        path.write_text(text.format(target=tiny_model_dir, retain=retain_line))
        return path

    return write
