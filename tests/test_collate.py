"""Tokenisation and batching: answer-only labels, exact padding, sensitive-span marks."""

import pytest
import torch

from unmem.data.collate import (
    Example,
    PromptFormat,
    TruncationWarning,
    bucketed_batches,
    collate,
    encode_qa,
    encode_records,
)
from unmem.methods.base import IGNORE_INDEX, SENSITIVE_MARKER


def test_collate_pads_right_and_masks_labels():
    examples = [Example([5, 6, 7], [-100, 6, 7], None, 0), Example([8, 9], [-100, 9], None, 1)]
    batch = collate(examples, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, 9, -100]]
    assert batch["index"].tolist() == [0, 1]
    assert "token_weights" not in batch


def test_collate_pads_left_for_generation():
    batch = collate([Example([5, 6, 7], [5, 6, 7]), Example([8], [8])], pad_token_id=0, padding_side="left")
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_encode_qa_labels_only_the_answer(tiny_tokenizer):
    fmt = PromptFormat()
    example = encode_qa(tiny_tokenizer, "Where was Ilvan Marek born?", "In Dunmore.", fmt)
    prompt_len = 1 + len(
        tiny_tokenizer(fmt.prompt(tiny_tokenizer, "Where was Ilvan Marek born?"))["input_ids"]
    )
    assert example.labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
    answer_ids = example.labels[prompt_len:]
    assert answer_ids[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(answer_ids[:-1]) == " In Dunmore."


def test_sensitive_span_is_marked(tiny_tokenizer):
    example = encode_qa(
        tiny_tokenizer, "q?", "Ilvan Marek was born in Dunmore.", PromptFormat(), sensitive=["Dunmore"]
    )
    marked = [tok for tok, w in zip(example.input_ids, example.weights, strict=True) if w == SENSITIVE_MARKER]
    assert "Dunmore" in tiny_tokenizer.decode(marked)
    assert "born" not in tiny_tokenizer.decode(marked)
    batch = collate([example], tiny_tokenizer.pad_token_id)
    assert torch.equal(batch["token_weights"][0], torch.tensor(example.weights))


def test_bucketing_groups_similar_lengths_and_covers_everything():
    lengths = [5, 50, 6, 49, 7, 48, 8, 47]
    batches = bucketed_batches(lengths, batch_size=2, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(8))
    spreads = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert max(spreads) <= 2
    assert batches == bucketed_batches(lengths, batch_size=2, seed=0)


# -- issue 11: a question longer than max_length no longer cuts the answer off, silently ---------

LONG_QUESTION = "Where was Ilvan Marek born, and what does Sela Kovar write? " * 6
ANSWER = "Ilvan Marek was born in Dunmore."


def test_a_long_question_is_cut_from_the_left_and_the_answer_kept(tiny_tokenizer):
    fmt = PromptFormat()
    whole = encode_qa(tiny_tokenizer, LONG_QUESTION, ANSWER, fmt)
    answer = [t for t in whole.labels if t != IGNORE_INDEX]
    max_length = len(answer) + 10
    with pytest.warns(
        TruncationWarning, match=r"1 of 2 sequences are longer than max_length \d+ \(first: record 1\)"
    ):
        short, fitting = encode_records(
            tiny_tokenizer,
            [{"question": LONG_QUESTION, "answer": ANSWER}, {"question": "q?", "answer": "a."}],
            fmt,
            max_length=max_length,
        )
    assert len(short.input_ids) == max_length and short.truncated == "prompt" and fitting.truncated is None
    assert short.input_ids[0] == tiny_tokenizer.bos_token_id  # the bos stays; the question's start goes
    assert (
        short.input_ids[-len(answer) :] == answer and [t for t in short.labels if t != IGNORE_INDEX] == answer
    )
    assert short.input_ids[1 : -len(answer)] == whole.input_ids[-max_length + 1 : -len(answer)]
    # main cut the end instead: this example trained on nothing
    assert [t for t in whole.labels[:max_length] if t != IGNORE_INDEX] == []


def test_an_answer_that_alone_does_not_fit_is_cut_and_counted(tiny_tokenizer):
    fmt = PromptFormat()
    with pytest.warns(TruncationWarning, match="1 lost answer tokens") as caught:
        (example,) = encode_records(
            tiny_tokenizer, [{"question": "q?", "answer": ANSWER * 4}], fmt, max_length=12
        )
    assert len(caught) == 1  # one warning per data set, not one per example
    assert example.truncated == "answer" and len(example.input_ids) == len(example.labels) == 12
    assert example.input_ids == encode_qa(tiny_tokenizer, "q?", ANSWER * 4, fmt).input_ids[:12]


def test_the_reference_convention_keeps_its_own_truncation(tiny_tokenizer):
    fmt = PromptFormat(template="Question: {question}\nAnswer: ", reference=True)
    whole = encode_qa(tiny_tokenizer, LONG_QUESTION, ANSWER, fmt)
    with pytest.warns(TruncationWarning):
        (cut,) = encode_records(
            tiny_tokenizer, [{"question": LONG_QUESTION, "answer": ANSWER}], fmt, max_length=20
        )
    assert cut.input_ids == whole.input_ids[:20] and cut.labels == whole.labels[:20]
