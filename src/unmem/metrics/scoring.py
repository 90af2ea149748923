"""Batched model calls for evaluation: the only module in ``unmem.metrics`` that runs a model.

One teacher-forced forward pass serves every per-token metric: ``TokenScores`` holds,
for each scored token, log p(label), whether the argmax equals the label, and the
Min-K%++ z-score (from the full-vocabulary log-softmax, computed inside the batch and
then dropped). The pure functions in ``tofu``/``mia``/``extraction``/``generation`` turn
these into metrics.

Alignment: a sequence is ``[bos] prompt answer [eos]`` (``unmem.data.collate``);
``logits[:, t]`` predicts token ``t + 1``, and only label positions (answer tokens, or
every token after the first for a passage) are scored.

Every function runs under ``torch.no_grad`` in eval mode (except ``gradient_norms``, which
needs gradients, still in eval mode so dropout is off) and puts ``model.training`` back
as it found it. Inputs go to ``device`` (default: the device of the model's first
parameter). Batches are sorted by length, so results are mapped back to input order.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from unmem.data.collate import (
    Example,
    PromptFormat,
    encode_qa,
    encode_text,
    generation_prompt_ids,
    iter_batches,
)
from unmem.logprobs import IGNORE_INDEX, at_least_float32, token_logps
from unmem.metrics.mia import token_zscores

# Rows of (tokens, vocab) log-softmax held at once: bounds memory for 128k-token vocabularies.
VOCAB_CHUNK_ROWS = 1024


@dataclass
class TokenScores:
    """Teacher-forced scores of one sample's label tokens, all of shape (tokens,)."""

    logps: np.ndarray  # float32, log p(label_t | prefix)
    argmax_match: np.ndarray  # bool, argmax_v p(v | prefix) == label_t
    zscores: np.ndarray | None = None  # float32 Min-K%++ z_t; None when not requested
    # float32 log p_s(label_t) under a sampling distribution (temperature, top-k; -inf outside the
    # top k); None when not requested. For the k-sample extraction rate.
    sample_logps: np.ndarray | None = None

    @property
    def n_tokens(self) -> int:
        return int(self.logps.size)

    @property
    def nll(self) -> float:
        """Token-mean NLL (NaN without tokens)."""
        return float(-self.logps.mean()) if self.logps.size else float("nan")

    @property
    def logp_sum(self) -> float:
        return float(self.logps.sum())


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its eos id, else 0 (only attention-masked slots get it)."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _progress(iterable: Any, total: int, desc: str) -> Any:
    # disable=None: no bar when stderr is not a terminal (logs, CI).
    return tqdm(iterable, total=total, desc=desc, disable=None, leave=False)


@torch.no_grad()
def score_examples(
    model: torch.nn.Module,
    examples: Sequence[Example],
    pad_id: int,
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    with_zscores: bool = True,
    sampling: tuple[float, int | None] | None = None,
    desc: str = "scoring",
) -> list[TokenScores]:
    """Teacher-forced ``TokenScores`` for tokenised examples, in input order.

    ``Example.index`` is overwritten with the position in ``examples`` (it maps batch
    rows back). Padding is on the right, so a sample scores the same alone or batched.
    ``sampling`` = (temperature, top_k or None) adds ``sample_logps``: each label's log-probability
    under that sampling distribution, as ``model.generate(do_sample=True)`` filters it.
    """
    device = torch.device(device) if device is not None else model_device(model)
    examples = [Example(e.input_ids, e.labels, None, i) for i, e in enumerate(examples)]
    results: list[TokenScores | None] = [None] * len(examples)
    n_batches = math.ceil(len(examples) / batch_size)
    with _eval_mode(model):
        batches = iter_batches(examples, batch_size, pad_id, seed=None)
        for batch in _progress(batches, n_batches, desc):
            input_ids = batch["input_ids"].to(device)
            logits = model(input_ids=input_ids, attention_mask=batch["attention_mask"].to(device)).logits
            logits = logits[:, :-1]  # (batch, time-1, vocab): logits[:, t] predicts token t+1
            labels = batch["labels"][:, 1:].to(device)  # (batch, time-1)
            mask = labels != IGNORE_INDEX
            flat_logits = logits[mask]  # (tokens, vocab), row-major over (batch, time)
            flat_labels = labels[mask]  # (tokens,)
            logps, matches, zs, sampled = [], [], [], []
            for start in range(0, flat_labels.numel(), VOCAB_CHUNK_ROWS):
                raw = at_least_float32(flat_logits[start : start + VOCAB_CHUNK_ROWS])
                chunk = torch.log_softmax(raw, dim=-1)
                chunk_labels = flat_labels[start : start + VOCAB_CHUNK_ROWS]
                logps.append(chunk.gather(-1, chunk_labels.unsqueeze(-1)).squeeze(-1))
                matches.append(chunk.argmax(-1) == chunk_labels)
                if with_zscores:
                    zs.append(token_zscores(chunk, chunk_labels))
                if sampling is not None:
                    sampled.append(sampling_logps(raw, chunk_labels, *sampling))
            counts = mask.sum(-1).tolist()
            row_logps = torch.cat(logps).cpu().numpy() if logps else np.zeros(0, np.float32)
            row_match = torch.cat(matches).cpu().numpy() if matches else np.zeros(0, bool)
            row_z = torch.cat(zs).cpu().numpy() if zs else np.zeros(0, np.float32)
            row_s = torch.cat(sampled).cpu().numpy() if sampled else np.zeros(0, np.float32)
            offsets = np.cumsum([0, *counts])
            for row, index in enumerate(batch["index"].tolist()):
                span = slice(offsets[row], offsets[row + 1])
                results[index] = TokenScores(
                    row_logps[span].astype(np.float32),
                    row_match[span].astype(bool),
                    row_z[span].astype(np.float32) if with_zscores else None,
                    row_s[span].astype(np.float32) if sampling is not None else None,
                )
    return results  # type: ignore[return-value]


def sampling_logps(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float, top_k: int | None
) -> torch.Tensor:
    """(tokens,) log-probability of each label under sampling at ``temperature`` from the ``top_k``
    most likely tokens (None: all), as transformers' warpers filter: logits / T, those below the
    k-th largest set to -inf (ties kept), then softmax. A label outside the top k gets -inf."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scaled = at_least_float32(logits) / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return torch.log_softmax(scaled, dim=-1).gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)


def answer_token_scores(
    model: torch.nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    answers: Sequence[str],
    fmt: PromptFormat,
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    max_length: int | None = None,
    add_eos: bool = True,
    with_zscores: bool = True,
) -> list[TokenScores]:
    """Scores of every answer token (eos included, as in training) given its question."""
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    examples = [
        encode_qa(tokenizer, q, a, fmt, max_length=max_length, add_eos=add_eos, index=i)
        for i, (q, a) in enumerate(zip(questions, answers, strict=True))
    ]
    return score_examples(
        model,
        examples,
        pad_token_id(tokenizer),
        batch_size=batch_size,
        device=device,
        with_zscores=with_zscores,
        desc="scoring answers",
    )


def answer_token_logps(
    model: torch.nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    answers: Sequence[str],
    fmt: PromptFormat,
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    max_length: int | None = None,
) -> list[np.ndarray]:
    """Per sample, log p of each answer token, in input order."""
    scores = answer_token_scores(
        model,
        tokenizer,
        questions,
        answers,
        fmt,
        batch_size=batch_size,
        device=device,
        max_length=max_length,
        with_zscores=False,
    )
    return [s.logps for s in scores]


def grouped_answer_scores(
    model: torch.nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    answer_groups: Sequence[Sequence[str]],
    fmt: PromptFormat,
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    max_length: int | None = None,
    add_eos: bool = True,
) -> list[list[TokenScores]]:
    """Several answers per question (TOFU's perturbed answers, multiple-choice options),
    scored in one batched pass; ``out[i][j]`` scores ``answer_groups[i][j]``.

    For zero-shot multiple choice use ``PromptFormat(template="{question}")`` and
    ``add_eos=False``; the option's summed log-prob is ``TokenScores.logp_sum``.
    """
    if len(questions) != len(answer_groups):
        raise ValueError(f"{len(questions)} questions but {len(answer_groups)} answer groups")
    flat_q = [q for q, group in zip(questions, answer_groups, strict=True) for _ in group]
    flat_a = [a for group in answer_groups for a in group]
    flat = answer_token_scores(
        model,
        tokenizer,
        flat_q,
        flat_a,
        fmt,
        batch_size=batch_size,
        device=device,
        max_length=max_length,
        add_eos=add_eos,
        with_zscores=False,
    )
    out, start = [], 0
    for group in answer_groups:
        out.append(flat[start : start + len(group)])
        start += len(group)
    return out


def text_token_scores(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    max_length: int | None = None,
    with_zscores: bool = True,
) -> list[TokenScores]:
    """Scores of every token of each passage after the first (bos ... eos)."""
    examples = [encode_text(tokenizer, t, max_length=max_length, index=i) for i, t in enumerate(texts)]
    return score_examples(
        model,
        examples,
        pad_token_id(tokenizer),
        batch_size=batch_size,
        device=device,
        with_zscores=with_zscores,
        desc="scoring texts",
    )


def text_token_logps(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    max_length: int | None = None,
) -> list[np.ndarray]:
    """Per passage, log p of each token after the first, in input order."""
    scores = text_token_scores(
        model,
        tokenizer,
        texts,
        batch_size=batch_size,
        device=device,
        max_length=max_length,
        with_zscores=False,
    )
    return [s.logps for s in scores]


def encode_prompt(tokenizer: Any, prompt: str, *, add_bos: bool = True) -> list[int]:
    """``[bos] + tokens(prompt)``, the same prefix ``encode_qa``/``encode_text`` build."""
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return ([bos] if add_bos and bos is not None else []) + list(ids)


@torch.no_grad()
def generate_ids(
    model: torch.nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int | Sequence[int],
    pad_token_id: int,
    eos_token_id: int | Sequence[int] | None,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    desc: str = "generating",
    temperature: float | None = None,
) -> list[list[int]]:
    """Greedy continuations (token ids, prompt and eos excluded), in input order; with a
    ``temperature``, sampled ones instead (the model's whole distribution: no top-k / top-p cut).

    Prompts are left-padded (HF derives position ids from the attention mask), sorted by
    length to limit padding. ``max_new_tokens`` may differ per prompt: a batch generates
    the largest budget and each output is cut to its own (greedy decoding makes that equal
    to a separate call). Output stops before the first end-of-sequence token: ``eos_token_id``
    (or any of several), or any the model's generation config names (chat models end a turn
    with their own, e.g. Llama 3's ``<|eot_id|>``); a batch ends as soon as every row has
    stopped. The KV cache is always on, whatever ``config.use_cache`` a gradient-checkpointed
    run saved.
    """
    n = len(prompt_ids)
    budgets = (
        [int(max_new_tokens)] * n if isinstance(max_new_tokens, int) else [int(b) for b in max_new_tokens]
    )
    if len(budgets) != n:
        raise ValueError(f"{len(budgets)} max_new_tokens values for {n} prompts")
    for i, ids in enumerate(prompt_ids):
        if len(ids) == 0:
            raise ValueError(f"prompt {i} has no tokens; generation needs at least one (add a bos token)")
    device = torch.device(device) if device is not None else model_device(model)
    stops = _stop_ids(model, eos_token_id)
    outputs: list[list[int]] = [[] for _ in range(n)]
    order = sorted((i for i in range(n) if budgets[i] > 0), key=lambda i: len(prompt_ids[i]))
    groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    with _eval_mode(model):
        for group in _progress(groups, len(groups), desc):
            width = max(len(prompt_ids[i]) for i in group)
            input_ids = torch.full((len(group), width), pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(group), width), dtype=torch.long)
            for row, i in enumerate(group):
                ids = list(prompt_ids[i])
                input_ids[row, width - len(ids) :] = torch.tensor(ids)
                attention[row, width - len(ids) :] = 1
            generated = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=max(budgets[i] for i in group),
                num_beams=1,
                **_decoding(temperature),
                pad_token_id=pad_token_id,
                eos_token_id=stops or None,
                use_cache=True,
            )[:, width:].tolist()
            for row, i in enumerate(group):
                tokens = generated[row][: budgets[i]]
                ends = [k for k, token in enumerate(tokens) if token in stops]
                outputs[i] = tokens[: ends[0]] if ends else tokens
    return outputs


def _decoding(temperature: float | None) -> dict[str, Any]:
    if temperature is None:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}


def _stop_ids(model: torch.nn.Module, eos_token_id: int | Sequence[int] | None) -> list[int]:
    """``eos_token_id`` (one or several) and the end-of-sequence ids of the model's generation config."""

    def as_list(ids: int | Sequence[int] | None) -> list[int | None]:
        return list(ids) if isinstance(ids, Sequence) else [ids]

    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    stops = [*as_list(eos_token_id), *as_list(configured)]
    return [int(t) for t in dict.fromkeys(stops) if t is not None]


def greedy_generate(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    add_bos: bool = True,
    stop: Sequence[str] = (),
) -> list[str]:
    """Greedy continuations of text prompts (prompt stripped, special tokens skipped,
    stopped at eos, then cut before the first of the ``stop`` strings).

    ``add_bos`` prepends the bos token as training did; pass False for prompts that
    already contain it (chat templates).
    """
    ids = [encode_prompt(tokenizer, p, add_bos=add_bos) for p in prompts]
    out_ids = generate_ids(
        model,
        ids,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad_token_id(tokenizer),
        eos_token_id=getattr(tokenizer, "eos_token_id", None),
        batch_size=batch_size,
        device=device,
    )
    texts = tokenizer.batch_decode(out_ids, skip_special_tokens=True) if out_ids else []
    for s in stop:
        texts = [t.split(s)[0] for t in texts]
    return list(texts)


def eos_ids(model: torch.nn.Module, tokenizer: Any) -> list[int]:
    """Where the model's own generation config stops (several ids for some chat models), else
    the tokenizer's eos: what ``model.generate`` uses when no eos is passed, as the reference does."""
    config = getattr(model, "generation_config", None)
    value = getattr(config, "eos_token_id", None)
    if value is None:
        value = getattr(tokenizer, "eos_token_id", None)
    return [] if value is None else [int(v) for v in (value if isinstance(value, list) else [value])]


def generate_answers(
    model: torch.nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    fmt: PromptFormat,
    *,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    stop: Sequence[str] = (),
    temperature: float | None = None,
) -> list[str]:
    """Greedy answers to questions under ``fmt`` (TOFU ROUGE), whitespace-stripped (sampled at
    ``temperature`` when one is given: ``sample_answers``).

    ``fmt.reference``: as TOFU's reference evaluator generates them: its prompt, stopped only
    at the model's eos ids, decoded with ``clean_up_tokenization_spaces=True``.
    """
    ids = [generation_prompt_ids(tokenizer, q, fmt) for q in questions]
    eos = eos_ids(model, tokenizer) if fmt.reference else getattr(tokenizer, "eos_token_id", None)
    out_ids = generate_ids(
        model,
        ids,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad_token_id(tokenizer),
        eos_token_id=eos,
        batch_size=batch_size,
        device=device,
        temperature=temperature,
    )
    cleanup = {"clean_up_tokenization_spaces": True} if fmt.reference else {}
    texts = tokenizer.batch_decode(out_ids, skip_special_tokens=True, **cleanup) if out_ids else []
    for s in stop:
        texts = [t.split(s)[0] for t in texts]
    return [t.strip() for t in texts]


def sample_answers(
    model: torch.nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    fmt: PromptFormat,
    *,
    samples: int,
    temperature: float = 1.0,
    seed: int = 0,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    stop: Sequence[str] = (),
) -> list[list[str]]:
    """``samples`` answers per question sampled at ``temperature`` (``out[i][j]``: sample j of
    question i), as ``generate_answers`` prompts and cleans them. Seeded: the same call gives
    the same answers, and torch's global random state is left as it was."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    repeated = [q for q in questions for _ in range(samples)]
    devices = [model_device(model)] if model_device(model).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        flat = generate_answers(
            model,
            tokenizer,
            repeated,
            fmt,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            stop=stop,
            temperature=temperature,
        )
    return [flat[i * samples : (i + 1) * samples] for i in range(len(questions))]


def prefix_continuations(
    model: torch.nn.Module,
    tokenizer: Any,
    targets: Sequence[Sequence[int]],
    *,
    prefix_lengths: Sequence[int] | None = None,
    stride: int = 1,
    add_bos: bool = True,
    batch_size: int = 32,
    device: torch.device | str | None = None,
) -> list[dict[int, list[int]]]:
    """Greedy continuations of target prefixes for EL_n (``extraction.extraction_likelihood``).

    ``targets`` are token ids without bos (``tokenizer(text, add_special_tokens=False)``).
    For each target of T tokens and each prefix length t (``prefix_lengths``, default
    1, 1 + stride, ... < T) the prompt is ``[bos] + target[:t]`` and the continuation has
    at most T - t tokens. Returns ``out[i][t]`` = continuation ids. Costs one generation
    per (target, t): raise ``stride`` on long texts.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    bos = getattr(tokenizer, "bos_token_id", None)
    prefix = [bos] if add_bos and bos is not None else []
    jobs: list[tuple[int, int]] = []
    for i, target in enumerate(targets):
        lengths = range(1, len(target), stride) if prefix_lengths is None else prefix_lengths
        jobs.extend((i, t) for t in lengths if 1 <= t < len(target))
    prompts = [prefix + list(targets[i][:t]) for i, t in jobs]
    budgets = [len(targets[i]) - t for i, t in jobs]
    generated = generate_ids(
        model,
        prompts,
        max_new_tokens=budgets,
        pad_token_id=pad_token_id(tokenizer),
        eos_token_id=getattr(tokenizer, "eos_token_id", None),
        batch_size=batch_size,
        device=device,
        desc="prefix continuations",
    )
    out: list[dict[int, list[int]]] = [{} for _ in targets]
    for (i, t), tokens in zip(jobs, generated, strict=True):
        out[i][t] = tokens
    return out


def gradient_norms(
    model: torch.nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    answers: Sequence[str],
    fmt: PromptFormat,
    *,
    device: torch.device | str | None = None,
    max_length: int | None = None,
    only_trainable: bool = False,
) -> np.ndarray:
    """Per sample ||∇θ NLL(a|q)||₂ over all parameters (or only those that already require
    grad), one sample at a time, in eval mode; for the gradient-norm MIA.

    One global L2 norm over the concatenated gradients (open-unlearning averages
    per-tensor norms instead). NaN for a sample without answer tokens. ``requires_grad``
    flags, ``.grad`` (left as None) and ``model.training`` are restored.
    """
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    device = torch.device(device) if device is not None else model_device(model)
    params = list(model.parameters())
    saved_flags = [p.requires_grad for p in params]
    norms = np.full(len(questions), np.nan)
    try:
        if not only_trainable:
            for p in params:
                p.requires_grad_(True)
        tracked = [p for p in params if p.requires_grad]
        with _eval_mode(model), torch.enable_grad():
            pairs = list(zip(questions, answers, strict=True))
            for i, (q, a) in enumerate(_progress(pairs, len(pairs), "gradient norms")):
                example = encode_qa(tokenizer, q, a, fmt, max_length=max_length)
                input_ids = torch.tensor([example.input_ids], device=device)
                labels = torch.tensor([example.labels], device=device)[:, 1:]
                n_tokens = int((labels != IGNORE_INDEX).sum())
                if n_tokens == 0 or not tracked:
                    continue
                model.zero_grad(set_to_none=True)
                logits = model(input_ids=input_ids).logits[:, :-1]
                loss = -token_logps(logits, labels).sum() / n_tokens
                loss.backward()
                squares = [p.grad.float().square().sum() for p in tracked if p.grad is not None]
                norms[i] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    finally:
        model.zero_grad(set_to_none=True)
        for p, flag in zip(params, saved_flags, strict=True):
            p.requires_grad_(flag)
    return norms
