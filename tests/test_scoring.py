"""Model calls on the tiny random Llama: agreement with a manual forward, batching and
padding invariance, left-padded generation, gradient norms.

The model is float64 here (the tiny_model fixture below): batched and alone, scored and manual
are the same computation, so scores agree to float64 rounding before they are stored as float32
(float_bounds.assert_stored_float32), and no near-tie between two logits can make greedy decoding
pick another token in one arrangement than in the other.
"""

import numpy as np
import pytest
import torch

from float_bounds import assert_stored_float32
from unmem.data.collate import PromptFormat, encode_qa, encode_text
from unmem.methods.base import IGNORE_INDEX
from unmem.metrics import mia, scoring

pytestmark = pytest.mark.numerics  # CI runs these again on other kernels (issue 21)
FMT = PromptFormat()


@pytest.fixture
def tiny_model(make_tiny_llama):
    return make_tiny_llama().double().eval()


QUESTIONS = [
    "Where was Ilvan Marek born?",
    "What?",
    "What genre does Sela Kovar write, and where was Ilvan Marek born, and why is the bread warm?",
    "Who?",
    "What genre does Sela Kovar write?",
]
ANSWERS = [
    "Ilvan Marek was born in Dunmore.",
    "Gothic fiction is the genre of Sela Kovar, and the weather was mild and the bread was warm.",
    "I don't know.",
    "Sela Kovar.",
    "Sela Kovar writes gothic fiction.",
]


def _manual(model, input_ids, labels):
    """Single-example forward: log-softmax rows that predict each label."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([input_ids])).logits[0, :-1]
    labels = torch.tensor(labels[1:])
    keep = labels != IGNORE_INDEX
    return torch.log_softmax(logits, -1)[keep], labels[keep]


def test_answer_scores_match_manual_forward(tiny_model, tiny_tokenizer):
    scores = scoring.answer_token_scores(tiny_model, tiny_tokenizer, QUESTIONS, ANSWERS, FMT, batch_size=3)
    for q, a, s in zip(QUESTIONS, ANSWERS, scores, strict=True):
        example = encode_qa(tiny_tokenizer, q, a, FMT)
        logps, labels = _manual(tiny_model, example.input_ids, example.labels)
        n_answer = len(tiny_tokenizer(" " + a, add_special_tokens=False)["input_ids"]) + 1  # + eos
        assert s.n_tokens == n_answer == labels.numel()
        assert_stored_float32(s.logps, logps.gather(-1, labels[:, None])[:, 0].numpy())
        np.testing.assert_array_equal(s.argmax_match, (logps.argmax(-1) == labels).numpy())
        assert_stored_float32(s.zscores, mia.token_zscores(logps, labels).numpy())
        assert s.nll == -float(s.logps.mean())  # the same float32 mean
    plain = scoring.answer_token_logps(tiny_model, tiny_tokenizer, QUESTIONS, ANSWERS, FMT)
    for s, lp in zip(scores, plain, strict=True):
        assert_stored_float32(s.logps, lp)


def test_scores_do_not_depend_on_batching(tiny_model, tiny_tokenizer):
    alone = [
        scoring.answer_token_logps(tiny_model, tiny_tokenizer, [q], [a], FMT)[0]
        for q, a in zip(QUESTIONS, ANSWERS, strict=True)
    ]
    for batch_size in (2, 5):  # batched with both longer and shorter samples
        batched = scoring.answer_token_logps(
            tiny_model, tiny_tokenizer, QUESTIONS, ANSWERS, FMT, batch_size=batch_size
        )
        for one, many in zip(alone, batched, strict=True):
            assert_stored_float32(one, many)
    texts = ANSWERS[::-1]
    batched = scoring.text_token_logps(tiny_model, tiny_tokenizer, texts, batch_size=4)
    for text, many in zip(texts, batched, strict=True):
        ids = encode_text(tiny_tokenizer, text).input_ids
        logps, labels = _manual(tiny_model, ids, ids)
        assert many.size == len(ids) - 1
        assert_stored_float32(many, logps.gather(-1, labels[:, None])[:, 0].numpy())


def test_grouped_answer_scores_keep_groups(tiny_model, tiny_tokenizer):
    groups = [ANSWERS[:3], ANSWERS[3:4], []]
    grouped = scoring.grouped_answer_scores(tiny_model, tiny_tokenizer, QUESTIONS[:3], groups, FMT)
    assert [len(g) for g in grouped] == [3, 1, 0]
    flat = scoring.answer_token_logps(tiny_model, tiny_tokenizer, [QUESTIONS[1]], [ANSWERS[3]], FMT)[0]
    assert_stored_float32(grouped[1][0].logps, flat)
    assert grouped[0][0].zscores is None  # only logps and argmax in this mode


def test_greedy_generate_batched_equals_one_at_a_time(tiny_model, tiny_tokenizer):
    prompts = [FMT.prompt(tiny_tokenizer, q) for q in QUESTIONS[1:4]] + ["Dunmore"]  # 3 to 25 tokens
    alone = [scoring.greedy_generate(tiny_model, tiny_tokenizer, [p], max_new_tokens=6)[0] for p in prompts]
    batched = scoring.greedy_generate(tiny_model, tiny_tokenizer, prompts, max_new_tokens=6, batch_size=4)
    assert batched == alone
    assert any(alone)  # a random model does produce text
    # the prompt is not echoed: the ids equal a manual greedy decode of the first prompt
    ids = scoring.encode_prompt(tiny_tokenizer, prompts[0])
    manual = tiny_model.generate(
        torch.tensor([ids]), max_new_tokens=6, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id
    )[0, len(ids) :].tolist()
    got = scoring.generate_ids(
        tiny_model, [ids], max_new_tokens=6, pad_token_id=tiny_tokenizer.pad_token_id, eos_token_id=None
    )[0]
    assert got == manual


def test_generate_ids_budgets_and_eos(tiny_model, tiny_tokenizer):
    pad = tiny_tokenizer.pad_token_id
    prompts = [scoring.encode_prompt(tiny_tokenizer, t) for t in ("Dunmore is", "The weather was mild and")]
    full = scoring.generate_ids(tiny_model, prompts, max_new_tokens=6, pad_token_id=pad, eos_token_id=None)
    cut = scoring.generate_ids(
        tiny_model, prompts, max_new_tokens=[2, 0], pad_token_id=pad, eos_token_id=None
    )
    assert cut == [full[0][:2], []]  # greedy: a smaller budget is a prefix
    # make the first generated token the "eos": the output stops before it
    stopped = scoring.generate_ids(
        tiny_model, prompts[:1], max_new_tokens=6, pad_token_id=pad, eos_token_id=full[0][0]
    )
    assert stopped == [[]]
    with pytest.raises(ValueError, match="no tokens"):
        scoring.generate_ids(tiny_model, [[]], max_new_tokens=2, pad_token_id=pad, eos_token_id=None)


def test_generation_stops_at_every_eos_the_model_names(tiny_model, tiny_tokenizer):
    """Chat models end a turn with their own token, listed in generation_config.eos_token_id
    (Llama 3: <|end_of_text|> and <|eot_id|>): each row stops at the first of them (issue 12)."""
    pad = tiny_tokenizer.pad_token_id
    prompts = [scoring.encode_prompt(tiny_tokenizer, t) for t in ("Dunmore is", "The weather was mild and")]
    full = scoring.generate_ids(tiny_model, prompts, max_new_tokens=6, pad_token_id=pad, eos_token_id=None)
    turn_end = full[0][2]
    tiny_model.generation_config.eos_token_id = [tiny_tokenizer.eos_token_id, turn_end]
    stopped = scoring.generate_ids(
        tiny_model, prompts, max_new_tokens=6, pad_token_id=pad, eos_token_id=tiny_tokenizer.eos_token_id
    )
    for got, whole in zip(stopped, full, strict=True):
        assert got == (whole[: whole.index(turn_end)] if turn_end in whole else whole)


def test_prefix_continuations(tiny_model, tiny_tokenizer):
    targets = [tiny_tokenizer(t, add_special_tokens=False)["input_ids"] for t in (ANSWERS[3], ANSWERS[0])]
    conts = scoring.prefix_continuations(tiny_model, tiny_tokenizer, targets, stride=2, batch_size=16)
    bos = tiny_tokenizer.bos_token_id
    for target, cont in zip(targets, conts, strict=True):
        assert sorted(cont) == list(range(1, len(target), 2))
        for t, tokens in cont.items():
            assert len(tokens) <= len(target) - t
        t = max(cont)
        alone = scoring.generate_ids(
            tiny_model,
            [[bos, *target[:t]]],
            max_new_tokens=len(target) - t,
            pad_token_id=tiny_tokenizer.pad_token_id,
            eos_token_id=tiny_tokenizer.eos_token_id,
        )[0]
        assert cont[t] == alone


def test_gradient_norms(tiny_model, tiny_tokenizer):
    tiny_model.train()
    frozen = next(tiny_model.parameters())
    frozen.requires_grad_(False)
    norms = scoring.gradient_norms(tiny_model, tiny_tokenizer, QUESTIONS[:3], ANSWERS[:3], FMT)
    assert norms.shape == (3,)
    assert np.isfinite(norms).all() and (norms > 0).all()
    assert len(set(norms.tolist())) == 3  # one norm per sample
    # state restored: requires_grad flags, no leftover gradients, training flag
    assert not frozen.requires_grad
    assert all(p.requires_grad for p in list(tiny_model.parameters())[1:])
    assert all(p.grad is None for p in tiny_model.parameters())
    assert tiny_model.training
    # only trainable parameters: the frozen embedding no longer contributes, the norm shrinks
    small = scoring.gradient_norms(
        tiny_model, tiny_tokenizer, QUESTIONS[:1], ANSWERS[:1], FMT, only_trainable=True
    )
    assert 0 < small[0] < norms[0]
