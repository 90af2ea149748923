"""Tokenisation of QA pairs and passages, and batching with little padding.

unmem's sequences are ``[bos] prompt answer [eos]`` (no bos in chat mode: the chat
template brings its own tokens), with prompt and answer tokenised separately so the
boundary is exact. Labels are -100 on the prompt and on padding, so losses and scores
count answer tokens only. A sequence longer than ``max_length`` loses the start of its
question (after the bos) rather than the end of its answer, which is what trains and is
scored; only an answer that alone does not fit is cut. ``warn_truncated`` says how many,
once per data set. Batches are built by length bucketing (similar lengths
together) rather than padding everything to a fixed length: on the world's short QA
pairs that keeps padding under a few percent.

``PromptFormat(reference=True)`` builds the token sequences of TOFU's reference evaluator
instead (open-unlearning ``preprocess_chat_instance``), so scores can be compared with
published tables; docs/conventions.md lists where and why the two differ.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from unmem.data.windows import continuation_text
from unmem.errors import UnmemWarning
from unmem.logprobs import IGNORE_INDEX, SENSITIVE_MARKER

DEFAULT_TEMPLATE = "Question: {question}\nAnswer:"
# open-unlearning's template for models without a chat template (``template_args`` of its
# base-model configs: user_start_tag "Question: ", user_end_tag "\n", asst_start_tag "Answer: ").
REFERENCE_TEMPLATE = "Question: {question}\nAnswer: "


@dataclass(frozen=True)
class PromptFormat:
    """How a question becomes a prompt.

    The built-in world's models are trained on ``template``. A pretrained chat model
    is prompted through its tokenizer's chat template instead (``chat=True``).
    ``reference=True``: the token sequences of TOFU's reference evaluator (see the module
    docstring); only evaluation uses it.
    """

    template: str = DEFAULT_TEMPLATE
    chat: bool = False
    reference: bool = False

    @classmethod
    def for_tokenizer(
        cls, tokenizer: Any, use_chat_template: bool | None = None, *, reference: bool = False
    ) -> PromptFormat:
        """Use the chat template when the tokenizer has one, unless told otherwise."""
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        chat = has_chat if use_chat_template is None else use_chat_template and has_chat
        return cls(
            template=REFERENCE_TEMPLATE if reference else DEFAULT_TEMPLATE, chat=chat, reference=reference
        )

    def prompt(self, tokenizer: Any, question: str) -> str:
        if self.chat:
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
            )
        return self.template.format(question=question)

    def answer(self, answer: str) -> str:
        # The plain template ends with "Answer:"; a chat prompt ends with the assistant header.
        return answer if self.chat else " " + answer


@dataclass
class Example:
    """One tokenised sequence; ``weights`` marks sensitive answer tokens for DI's focused variant."""

    input_ids: list[int]
    labels: list[int]
    weights: list[float] | None = None
    index: int = 0  # position of the source record, so per-sample results map back to it
    # Longer than max_length: "prompt" (the question lost its start) or "answer" (answer tokens lost)
    truncated: str | None = None

    def split(self) -> tuple[list[int], list[int]]:
        """(the tokens before the first labelled one, the labelled tokens): what greedy decoding
        continues, and what it should repeat if the sequence is memorised."""
        start = next((i for i, label in enumerate(self.labels) if label != IGNORE_INDEX), len(self.labels))
        return self.input_ids[:start], [t for t in self.labels[start:] if t != IGNORE_INDEX]


class TruncationWarning(UnmemWarning):
    """Sequences of a data set were longer than ``max_length``."""


def warn_truncated(examples: Sequence[Example], max_length: int | None) -> None:
    """One warning for a data set: how many sequences were cut, and how."""
    cut = [e for e in examples if e.truncated is not None]
    if not cut:
        return
    lost = sum(e.truncated == "answer" for e in cut)
    how = [f"{len(cut) - lost} kept their answer (the question cut from the left)"] if len(cut) > lost else []
    how += [f"{lost} lost answer tokens (their answer alone is too long)"] if lost else []
    warnings.warn(
        f"{len(cut)} of {len(examples)} sequences are longer than max_length {max_length} "
        f"(first: record {cut[0].index + 1}): {'; '.join(how)}; raise max_length to keep them whole",
        TruncationWarning,
        stacklevel=3,
    )


def _special(tokenizer: Any, name: str) -> list[int]:
    token_id = getattr(tokenizer, f"{name}_token_id", None)
    return [] if token_id is None else [token_id]


def _token_list(encoded: Any) -> list[int]:
    """``apply_chat_template(tokenize=True)`` gives a list, or a BatchEncoding in transformers 5."""
    return list(encoded["input_ids"] if not isinstance(encoded, list) else encoded)


def _chat(question: str, answer: str | None = None) -> list[dict[str, str]]:
    turns = [{"role": "user", "content": question}]
    return turns + ([{"role": "assistant", "content": answer}] if answer is not None else [])


def reference_prompt_ids(tokenizer: Any, question: str, fmt: PromptFormat) -> list[int]:
    """The reference's prompt: the tokenizer decides on special tokens (``add_special_tokens=True``),
    the plain template ends in ``"Answer: "``, a chat prompt ends with the assistant header."""
    if fmt.chat:
        return _token_list(
            tokenizer.apply_chat_template(_chat(question), tokenize=True, add_generation_prompt=True)
        )
    return list(tokenizer(fmt.template.format(question=question), add_special_tokens=True)["input_ids"])


def encode_qa_reference(
    tokenizer: Any,
    question: str,
    answer: str,
    fmt: PromptFormat,
    *,
    max_length: int | None = None,
    index: int = 0,
) -> Example:
    """TOFU's reference sequence: prompt and prompt + answer tokenised *separately*, the labels
    masked by the prompt's length, eos appended unless the sequence already ends with it.

    With BPE tokenizers the prompt's trailing space and the answer's first word merge in the
    full sequence (``"Answer: The"`` -> ``... "Answer", ":", " The"``), so the mask by the
    prompt's length hides the answer's first token; in chat mode the template's end-of-turn
    tokens are scored as part of the answer.
    """
    prompt_ids = reference_prompt_ids(tokenizer, question, fmt)
    if fmt.chat:
        full = _token_list(tokenizer.apply_chat_template(_chat(question, answer), tokenize=True))
    else:
        full = list(
            tokenizer(fmt.template.format(question=question) + answer, add_special_tokens=True)["input_ids"]
        )
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None and (not full or full[-1] != eos):
        full.append(eos)
    labels = [IGNORE_INDEX] * len(prompt_ids) + full[len(prompt_ids) :]
    if max_length is not None and len(full) > max_length:  # the reference's right truncation, kept exact
        return Example(full[:max_length], labels[:max_length], None, index, truncated="answer")
    return Example(full, labels, None, index)


def generation_prompt_ids(tokenizer: Any, question: str, fmt: PromptFormat) -> list[int]:
    """The token ids a generation starts from: the prompt of ``encode_qa``'s sequence."""
    if fmt.reference:
        return reference_prompt_ids(tokenizer, question, fmt)
    bos = [] if fmt.chat else _special(tokenizer, "bos")
    return bos + list(tokenizer(fmt.prompt(tokenizer, question), add_special_tokens=False)["input_ids"])


def encode_qa(
    tokenizer: Any,
    question: str,
    answer: str,
    fmt: PromptFormat,
    *,
    sensitive: Sequence[str] = (),
    max_length: int | None = None,
    add_eos: bool = True,
    index: int = 0,
) -> Example:
    """Tokenise prompt and answer separately so the boundary is exact, then concatenate
    (``fmt.reference``: the reference's sequence, ``encode_qa_reference``)."""
    if fmt.reference:
        return encode_qa_reference(tokenizer, question, answer, fmt, max_length=max_length, index=index)
    prompt_text = fmt.prompt(tokenizer, question)
    answer_text = fmt.answer(answer)
    bos = [] if fmt.chat else _special(tokenizer, "bos")
    prompt_ids = bos + tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    encoded = tokenizer(answer_text, add_special_tokens=False, return_offsets_mapping=bool(sensitive))
    answer_ids = list(encoded["input_ids"]) + (_special(tokenizer, "eos") if add_eos else [])
    weights = None
    if sensitive:
        spans = [
            (start, start + len(span))
            for span in sensitive
            if span and (start := answer_text.find(span)) >= 0
        ]
        weights = [
            SENSITIVE_MARKER if any(a < e and b > s for s, e in spans) else 1.0
            for a, b in encoded["offset_mapping"]
        ] + [1.0] * (len(answer_ids) - len(encoded["input_ids"]))
    example = Example(
        prompt_ids + answer_ids,
        [IGNORE_INDEX] * len(prompt_ids) + answer_ids,
        None if weights is None else [1.0] * len(prompt_ids) + weights,
        index,
    )
    if max_length is not None and len(example.input_ids) > max_length:
        return _shorten(example, len(bos), len(prompt_ids), max_length)
    return example


def _shorten(example: Example, keep: int, prompt_length: int, max_length: int) -> Example:
    """Cut ``example`` to ``max_length``: the question from the left (after the first ``keep``
    tokens, the bos) when the whole answer then fits with some of it, else the answer's end.

    The answer is what trains and is scored: cutting it off instead would leave a long
    question's example with few or no labels.
    """
    room = max_length - keep - (len(example.input_ids) - prompt_length)  # question tokens that fit
    if room >= 1:
        drop = slice(keep, prompt_length - room)
        kind = "prompt"
    else:
        drop = slice(max_length, len(example.input_ids))
        kind = "answer"

    def cut(values: list) -> list:
        return values[: drop.start] + values[drop.stop :]

    weights = None if example.weights is None else cut(example.weights)
    return Example(cut(example.input_ids), cut(example.labels), weights, example.index, truncated=kind)


def encode_text(tokenizer: Any, text: str, *, max_length: int | None = None, index: int = 0) -> Example:
    """A plain passage: every token after the first is a label."""
    ids = _special(tokenizer, "bos") + tokenizer(text, add_special_tokens=False)["input_ids"]
    ids += _special(tokenizer, "eos")
    if max_length is not None:
        ids = ids[:max_length]
    return Example(ids, list(ids), None, index)


def encode_window(
    tokenizer: Any,
    record: dict[str, Any],
    *,
    max_length: int | None = None,
    continuation_tokens: int | None = None,
    index: int = 0,
) -> Example:
    """A text window (``prompt`` / ``gt``, ``unmem.data.windows``): ``[bos] prompt continuation``,
    labels on the continuation's first ``continuation_tokens`` tokens (all: None), no eos (a window
    is the middle of a text). Longer than ``max_length``: the prompt loses its start, as a QA
    pair's question does."""
    bos = _special(tokenizer, "bos")
    prompt_ids = bos + list(tokenizer(str(record["prompt"]), add_special_tokens=False)["input_ids"])
    continuation = list(tokenizer(continuation_text(record), add_special_tokens=False)["input_ids"])
    continuation = continuation[:continuation_tokens]
    example = Example(prompt_ids + continuation, [IGNORE_INDEX] * len(prompt_ids) + continuation, None, index)
    if max_length is not None and len(example.input_ids) > max_length:
        return _shorten(example, len(bos), len(prompt_ids), max_length)
    return example


def encode_records(
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    fmt: PromptFormat,
    *,
    answer_key: str = "answer",
    max_length: int | None = None,
) -> list[Example]:
    """QA records -> examples under ``fmt``; the ``sensitive`` field, when present, feeds token
    weights. Text windows (``prompt`` / ``gt`` records) -> ``encode_window``, whatever ``fmt``.
    Sequences longer than ``max_length`` are counted in one ``TruncationWarning``."""
    examples = [
        encode_window(tokenizer, record, max_length=max_length, index=i)
        if "prompt" in record and "question" not in record
        else encode_qa(
            tokenizer,
            record["question"],
            record[answer_key],
            fmt,
            sensitive=record.get("sensitive") or (),
            max_length=max_length,
            index=i,
        )
        for i, record in enumerate(records)
    ]
    warn_truncated(examples, max_length)
    return examples


def collate(examples: Sequence[Example], pad_token_id: int, *, padding_side: str = "right") -> dict[str, Any]:
    """Pad to the longest example in the batch.

    Returns ``input_ids``, ``attention_mask`` and ``labels`` of shape (batch, time),
    ``token_weights`` (batch, time) when any example has weights, and ``index`` (batch,).
    """
    width = max(len(e.input_ids) for e in examples)
    batch = len(examples)
    input_ids = torch.full((batch, width), pad_token_id, dtype=torch.long)
    labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((batch, width), dtype=torch.long)
    has_weights = any(e.weights is not None for e in examples)
    weights = torch.ones((batch, width)) if has_weights else None
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        cols = slice(0, n) if padding_side == "right" else slice(width - n, width)
        input_ids[row, cols] = torch.tensor(example.input_ids)
        labels[row, cols] = torch.tensor(example.labels)
        attention[row, cols] = 1
        if weights is not None and example.weights is not None:
            weights[row, cols] = torch.tensor(example.weights)
    out: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "labels": labels,
        "index": torch.tensor([e.index for e in examples]),
    }
    if weights is not None:
        out["token_weights"] = weights
    return out


def bucketed_batches(
    lengths: Sequence[int], batch_size: int, *, seed: int | None, bucket_factor: int = 50
) -> list[list[int]]:
    """Index batches of similar length.

    Indices are shuffled (unless ``seed`` is None), cut into buckets of
    ``bucket_factor * batch_size``, sorted by length inside each bucket and split into
    batches; the batch order is shuffled again so training does not see lengths in order.
    """
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    if seed is not None:
        rng.shuffle(order)
    span = max(batch_size * bucket_factor, batch_size)
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        bucket = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches.extend(bucket[i : i + batch_size] for i in range(0, len(bucket), batch_size))
    if seed is not None:
        rng.shuffle(batches)
    return batches


def iter_batches(
    examples: Sequence[Example],
    batch_size: int,
    pad_token_id: int,
    *,
    seed: int | None = None,
    padding_side: str = "right",
) -> Iterator[dict[str, Any]]:
    """Length-bucketed, padded batches; ``seed=None`` keeps the input order (for scoring)."""
    lengths = [len(e.input_ids) for e in examples]
    if seed is None:
        # Scoring: sort globally by length for the least padding; ``index`` maps results back.
        order = sorted(range(len(examples)), key=lambda i: lengths[i])
        groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        groups = bucketed_batches(lengths, batch_size, seed=seed)
    for group in groups:
        yield collate([examples[i] for i in group], pad_token_id, padding_side=padding_side)
