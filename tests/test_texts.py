"""The ``texts`` layout (issue 20): windows cut from long texts, their files and bad inputs, the
memorisation metrics on windows (hand-computed values), evaluation and unlearning end to end on a
tiny model, and the license-texts example built from stand-in files (no system file is read)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from unmem.cli import app
from unmem.config import build_config
from unmem.data import licenses
from unmem.data.benchmarks import load_benchmark
from unmem.data.collate import TruncationWarning, encode_window
from unmem.data.windows import continuation_text, cut_windows, read_windows
from unmem.errors import UnmemError
from unmem.evaluation import EvalOptions, evaluate, read_summary
from unmem.metrics import extraction as ext
from unmem.metrics.scoring import pad_token_id, sampling_logps, score_examples
from unmem.train import unlearn
from unmem.train.stopping import VERBATIM_TOKENS

# Words of the tiny tokenizer's training sentences (conftest.SENTENCES): a few tokens each.
WORDS = [
    "the",
    "weather",
    "was",
    "mild",
    "and",
    "the",
    "bread",
    "was",
    "warm",
    "I",
    "don't",
    "know",
    "I",
    "am",
    "not",
    "sure",
    "about",
    "that",
]
FAST = EvalOptions(verbmem_max_new_tokens=8, extraction_tokens=4, extraction_samples=10, embedding=False)


def text(n: int, shift: int = 0) -> str:
    return " ".join(WORDS[(i + shift) % len(WORDS)] for i in range(n))


# -- windows ----------------------------------------------------------------------------------------


def test_continuations_tile_the_text_after_its_first_prompt():
    # 10 words, P = 3, C = 3: the 7 words after the first 3 make ceil(7/3) = 3 continuations of
    # near-equal length (cuts 3 + round(i * 7 / 3) = 3, 5, 8, 10), each prompted by the 3 words before it.
    assert cut_windows("a b c d e f g h i j", 3, 3) == [
        ("a b c", " d e"),
        ("c d e", " f g h"),
        ("f g h", " i j"),
    ]


def test_windows_keep_the_text_exactly():
    sample = "Line one\n\n  indented   words\there and there"
    windows = cut_windows(sample, 2, 2)
    # 7 words, P = C = 2: ceil(5 / 2) = 3 continuations, cuts 2 + round(i * 5 / 3) = 2, 4, 5, 7.
    # Every continuation starts with the whitespace that really follows its prompt...
    assert [gt for _, gt in windows] == ["\n\n  indented   words", "\there", " and there"]
    # ...so the first prompt + every continuation is the text (from its first word) exactly.
    assert windows[0][0] + "".join(gt for _, gt in windows) == sample


def test_short_texts_are_one_window_split_in_half():
    assert cut_windows("one two three", 5, 5) == [("one", " two three")]
    assert cut_windows("one two three four", 5, 5) == [("one two", " three four")]
    assert cut_windows("one", 5, 5) == []
    assert cut_windows("   ", 5, 5) == []


def test_continuation_text_restores_the_space_a_split_dropped():
    # MUSE's files and the world's bios halve a text at a space and drop it.
    assert continuation_text({"prompt": "was born in", "gt": "Dunmore."}) == " Dunmore."
    assert continuation_text({"prompt": "was born in", "gt": " Dunmore."}) == " Dunmore."
    assert continuation_text({"prompt": "was full of them", "gt": ", and that"}) == ", and that"
    assert continuation_text({"prompt": "end\n", "gt": "Next"}) == "Next"


def test_window_encoding_scores_the_continuation_only(tiny_tokenizer):
    record = {"prompt": "the weather was", "gt": " mild and warm"}
    example = encode_window(tiny_tokenizer, record)
    prompt = [
        tiny_tokenizer.bos_token_id,
        *tiny_tokenizer("the weather was", add_special_tokens=False)["input_ids"],
    ]
    continuation = tiny_tokenizer(" mild and warm", add_special_tokens=False)["input_ids"]
    assert example.input_ids == prompt + continuation  # no eos: a window is the middle of a text
    assert example.labels == [-100] * len(prompt) + continuation
    capped = encode_window(tiny_tokenizer, record, continuation_tokens=2)
    assert capped.labels[len(prompt) :] == continuation[:2]


def test_files_of_each_kind_give_the_same_windows(tmp_path):
    body = text(12)
    (tmp_path / "a.txt").write_text(body)
    (tmp_path / "a.jsonl").write_text(json.dumps({"id": "doc-1", "text": body}) + "\n")
    (tmp_path / "a.json").write_text(json.dumps([body]))
    expected = cut_windows(body, 4, 4)
    for name in ("a.txt", "a.jsonl", "a.json"):
        windows = read_windows(tmp_path / name, 4, 4)
        assert [(w["prompt"], w["gt"]) for w in windows] == expected
        assert [w["window"] for w in windows] == list(range(len(expected)))
    assert read_windows(tmp_path / "a.jsonl", 4, 4)[0]["doc"] == "doc-1"
    assert read_windows(tmp_path / "a.jsonl", 4, 4)[0]["line"] == 1
    # MUSE's verbmem records are windows as given.
    (tmp_path / "v.json").write_text(json.dumps([{"prompt": "the weather", "gt": "was mild"}]))
    assert [(w["prompt"], w["gt"]) for w in read_windows(tmp_path / "v.json")] == [
        ("the weather", "was mild")
    ]


BAD_FILES = [
    ("forget.txt", b"", "forget.txt: no text to score"),
    ("forget.txt", b"   \n\n", "forget.txt: no text to score"),
    ("forget.txt", b"caf\xe9 au lait", "forget.txt:1: not UTF-8"),
    ("forget.jsonl", b"", "forget.jsonl: no text to score"),
    ("forget.jsonl", b'{"text": "ok then"}\n{"text": "caf\xe9"}\n', "forget.jsonl:2: not UTF-8"),
    ("forget.jsonl", b'{"text": "ok then"}\n{"title": "x"}\n', "forget.jsonl:2: expected a `text` field"),
    ("forget.jsonl", b'{"prompt": "the weather"}\n', "forget.jsonl:1: field 'gt': missing"),
    ("forget.json", b"[]", "forget.json: no text to score"),
    ("forget.json", b'["caf\xe9"]', "forget.json:1: not UTF-8"),
    ("forget.csv", b"a,b", "forget.csv: unknown text file type"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_FILES)
def test_bad_text_files_are_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnmemError, match=message.replace("(", r"\(")):
        read_windows(path)


def _parquet(path: Path, column: str, values: list, kind: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({column: pa.array(values, getattr(pa, kind)())}), path)


@pytest.mark.parametrize(
    ("column", "values", "kind", "message"),
    [
        ("text", [], "string", "forget.parquet: no text to score"),
        ("text", [b"ok then", b"caf\xe9"], "binary", "forget.parquet:2: field 'text': not UTF-8"),
        ("gt", [b"caf\xe9"], "binary", "forget.parquet:1: field 'gt': not UTF-8"),
        ("title", ["x"], "string", "forget.parquet:1: expected a `text` field"),
    ],
)
def test_bad_parquet_files_are_one_clear_error(tmp_path, column, values, kind, message):
    path = tmp_path / "forget.parquet"
    _parquet(path, column, values, kind)
    with pytest.raises(UnmemError, match=message):
        read_windows(path)


def test_an_empty_or_broken_parquet_file_is_one_clear_error(tmp_path):
    path = tmp_path / "forget.parquet"
    path.write_bytes(b"")
    with pytest.raises(UnmemError, match=r"forget\.parquet: not a readable Parquet file"):
        read_windows(path)
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(UnmemError, match=r"forget\.parquet: not a readable Parquet file"):
        read_windows(path)


def test_parquet_texts_read_from_string_or_utf8_binary_columns(tmp_path):
    path = tmp_path / "forget.parquet"
    _parquet(path, "text", [text(12).encode("utf-8")], "binary")
    assert [(w["prompt"], w["gt"]) for w in read_windows(path, 4, 4)] == cut_windows(text(12), 4, 4)
    _parquet(path, "text", ["ok then", "café au lait"], "string")  # a string column is read as is
    assert read_windows(path)[0]["prompt"] == "ok"


# -- the layout --------------------------------------------------------------------------------------


def write_texts_dir(root: Path, *, forget: str | None = None) -> Path:
    """forget as a plain file, retain and holdout as JSON Lines, plus world-facts QA and general text."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "forget.txt").write_text(forget if forget is not None else text(20))
    rows = {
        "retain": [{"id": f"r{i}", "text": text(14, shift=i)} for i in range(3)],
        "holdout": [{"id": f"h{i}", "text": text(14, shift=5 + i)} for i in range(4)],
        "world_facts": [
            {
                "question": "What is the capital of France?",
                "answer": "Paris",
                "perturbed_answer": ["Oslo", "Rome"],
            }
        ],
        "general_eval": [{"text": text(10, shift=3)}],
    }
    for name, records in rows.items():
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def test_texts_layout_loads_windows_and_utility_sets(tmp_path):
    root = write_texts_dir(tmp_path / "texts")
    data = load_benchmark("texts", root, "forget")
    sizes = data.sizes()
    # 20 words, P = 32: one window (halves); 14-word texts: one window each.
    assert sizes["verbmem/forget"] == 1 and sizes["verbmem/retain"] == 3 and sizes["verbmem/holdout"] == 4
    assert sizes["qa/world_facts"] == 1 and sizes["general"] == 1 and sizes["nlu"] > 0
    assert data.membership_kind() == "windows"
    assert data.verbmem["holdout"][2]["doc"] == "h2"
    assert "real_world: not found" in " ".join(data.notes)
    (root / "forget.txt").unlink()
    with pytest.raises(UnmemError, match=r"forget\{.txt,.jsonl,.json,.parquet\}: file not found"):
        load_benchmark("texts", root, "forget")


# -- metrics (hand-computed) ---------------------------------------------------------------------------


def test_exact_match_length_is_the_common_prefix():
    assert ext.exact_match_length([5, 6, 7, 8], [5, 6, 9, 8]) == 2
    assert ext.exact_match_length([5, 6], [5, 6, 7]) == 2
    assert ext.exact_match_length([1], [2]) == 0
    result = ext.exact_match_lengths([[5, 6, 9], [1, 2, 3]], [[5, 6, 7], [1, 2, 3]])
    assert result.per_sample == [2.0, 3.0] and result.value == 2.5 and result.extra["max"] == 3.0


def test_exact_match_words_counts_whole_words_only():
    assert ext.exact_match_words(" THE SOFTWARE IS PROVIDED", " THE SOFTWARE IS PROVIDED AS") == 4
    # The first half of a split word is not a word: "PROVIDING" against "PROVIDED".
    assert ext.exact_match_words(" IS PROVIDING AS", " IS PROVIDED AS") == 1
    assert ext.exact_match_words("met:\n\nThe", " met: The") == 2  # whitespace is a separator only
    assert ext.exact_match_words("", " any") == 0
    result = ext.exact_match_word_lengths([" a b c", " x"], [" a b d", " x y"])
    assert result.per_sample == [2.0, 1.0] and result.value == 1.5 and result.extra["max"] == 2.0
    with pytest.raises(ValueError, match="1 generations but 2"):
        ext.exact_match_word_lengths([" a"], [" a", " b"])


def test_k_sample_extraction_probability():
    # Two tokens of probability 1/2: p = 1/4; one sample 1/4, two 1 - (3/4)^2 = 7/16.
    half = math.log(0.5)
    assert ext.extraction_probability([half, half], 1) == pytest.approx(
        0.25, rel=1e-12
    )  # float64 closed form
    assert ext.extraction_probability([half, half], 2) == pytest.approx(7 / 16, rel=1e-12)
    assert ext.extraction_probability([0.0, 0.0], 5) == 1.0
    assert ext.extraction_probability([-math.inf], 100) == 0.0  # a token outside the top k
    assert math.isnan(ext.extraction_probability([], 3))
    # n = 1 keeps only the first token of each window: 1 - (1/2)^3 = 7/8 and 1 - 0^3 = 1.
    result = ext.k_sample_extraction([[half, -50.0], [0.0, half]], k=3, n=1)
    assert result.per_sample == pytest.approx([7 / 8, 1.0], rel=1e-12) and result.value == pytest.approx(
        15 / 16
    )


def test_window_metrics_per_set_by_hand():
    """The extraction family's per-set numbers from known scores: two forget windows, one holdout."""
    from types import SimpleNamespace

    from unmem.evaluation.families.extraction import _windows
    from unmem.evaluation.registry import FamilyResult

    half, quarter = math.log(0.5), math.log(0.25)
    scores = {
        "forget": [
            SimpleNamespace(
                argmax_match=np.array([True, True, False, True]), sample_logps=[half, half, 0.0, 0.0]
            ),
            SimpleNamespace(argmax_match=np.array([False, True]), sample_logps=[quarter, 0.0]),
        ],
        "holdout": [
            SimpleNamespace(argmax_match=np.array([False, False, True]), sample_logps=[quarter, quarter, 0.0])
        ],
    }
    truths = {"forget": [[1, 2, 3, 4], [5, 6]], "holdout": [[7, 8, 9]]}
    greedy = {"forget": [[1, 2, 9, 4], [5, 6]], "holdout": [[0, 8, 9]]}
    # Tokens 2 and 3 are halves of one word: the first forget window repeats 2 tokens, 1 word.
    pieces = {
        0: " no",
        1: " THE",
        2: " PROVID",
        3: "ED",
        4: " AS",
        5: " a",
        6: " b",
        7: " x",
        8: " y",
        9: "ING",
    }

    def decode(ids, skip_special_tokens=False):
        return "".join(pieces[i] for i in ids)

    session = SimpleNamespace(
        opts=EvalOptions(extraction_samples=2, extraction_tokens=2),
        data=SimpleNamespace(
            verbmem={name: [{"prompt": "a", "gt": "b"}] * len(s) for name, s in scores.items()}
        ),
        window_scores=scores.__getitem__,
        window_truths=truths.__getitem__,
        window_continuations=greedy.__getitem__,
        tokenizer=SimpleNamespace(
            decode=decode, batch_decode=lambda batch, **kw: [decode(i, **kw) for i in batch]
        ),
    )
    metrics: dict = {}
    result = FamilyResult(metrics={})
    _windows(session, metrics, result)
    # The repeated tokens, decoded: the first two of each forget window, none of the holdout's.
    assert [row["exact_text"] for row in result.rows] == [" THE PROVID", " a b", ""]
    # Accuracy: windows 3/4 and 1/2 -> 0.625; holdout 1/3.
    assert metrics["forget_mem_acc"] == 0.625 and metrics["holdout_mem_acc"] == pytest.approx(
        1 / 3, rel=1e-12
    )
    # Exact-match length: 2 and 2 tokens; holdout 0.
    assert metrics["forget_exact_len"] == 2.0 and metrics["holdout_exact_len"] == 0.0
    # In words: " THE" (" PROVID|ING" is not " PROVID|ED") and " a b": (1 + 2) / 2; holdout 0.
    assert [row["exact_words"] for row in result.rows] == [1.0, 2.0, 0.0]
    assert metrics["forget_exact_words"] == 1.5 and metrics["holdout_exact_words"] == 0.0
    # First 2 tokens, k = 2: p = 1/4 -> 7/16; p = 1/4 -> 7/16; holdout p = 1/16 -> 1 - (15/16)^2 = 31/256.
    # float64 closed form on exact powers of two: 1e-12 is far above its rounding.
    assert metrics["forget_extract_rate"] == pytest.approx(7 / 16, rel=1e-12)
    assert metrics["holdout_extract_rate"] == pytest.approx(31 / 256, rel=1e-12)
    assert "retain_mem_acc" not in metrics  # a set without windows gives no numbers


def test_window_membership_aucs_by_hand():
    """The MIA family on text windows: LOSS, zlib and Min-K% AUCs from known continuation scores."""
    from types import SimpleNamespace

    from unmem.evaluation.families.mia import run

    def window(nll: float, logps: list[float]) -> SimpleNamespace:
        return SimpleNamespace(nll=nll, logps=np.array(logps), zscores=np.array(logps))

    texts = {"forget": ["a b", "a b c d e f"], "holdout": ["x", "x y z"]}
    scores = {
        "forget": [window(1.0, [-1.0, -1.0]), window(2.0, [-0.5, -3.5])],
        "holdout": [window(1.5, [-1.5]), window(3.0, [-2.0, -4.0])],
    }
    data = SimpleNamespace(membership_kind=lambda: "windows")
    session = SimpleNamespace(
        data=data,
        opts=EvalOptions(min_k=0.5),
        membership_scores=lambda side: (scores[side], texts[side]),
    )
    ctx = SimpleNamespace(session=session, inputs=SimpleNamespace(reference_model=None), reference=None)
    result = run(ctx)
    # LOSS (-NLL): forget 1.0 beats holdout 1.5 and 3.0, forget 2.0 beats 3.0 only: 3 of 4 pairs.
    assert result.metrics["mia_loss_auc"] == 0.75
    # Min-50%: floor(0.5 n) tokens, at least 1 -> forget -1.0, -3.5; holdout -1.5, -4.0: 3 of 4 pairs.
    assert result.metrics["mia_min_k_auc"] == 0.75
    # zlib: -NLL / zlib length of the continuation's text (11, 19, 9 and 13 bytes compressed):
    # forget -1/11 = -0.091, -2/19 = -0.105 beat holdout -1.5/9 = -0.167, -3/13 = -0.231: all 4 pairs.
    assert result.metrics["mia_zlib_auc"] == 1.0
    assert result.metrics["mia_gradnorm_auc"] is None and "mia_gradnorm_auc" in result.reasons
    assert [row["loss"] for row in result.rows] == [-1.0, -2.0, -1.5, -3.0]


def test_sampling_log_probabilities_follow_temperature_and_top_k():
    logits = torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64)
    # Top-2 at T = 1: label 1 gets e^1 / (e^2 + e^1) = 1 / (1 + e); label 2 is cut (-inf).
    assert float(sampling_logps(logits, torch.tensor([1]), 1.0, 2).exp()) == pytest.approx(
        1 / (1 + math.e), rel=1e-6
    )
    assert float(sampling_logps(logits, torch.tensor([2]), 1.0, 2)) == -math.inf
    # T = 2, no top-k: softmax([1, 0.5, 0]) at label 0 = 1 / (1 + e^-0.5 + e^-1).
    expected = 1 / (1 + math.exp(-0.5) + math.exp(-1))
    assert float(sampling_logps(logits, torch.tensor([0]), 2.0, None).exp()) == pytest.approx(
        expected, rel=1e-6
    )


def test_window_scores_match_a_plain_forward_pass(tiny_model, tiny_tokenizer):
    record = {"prompt": "the weather was", "gt": " mild and the bread was warm"}
    example = encode_window(tiny_tokenizer, record)
    (scores,) = score_examples(tiny_model, [example], pad_token_id(tiny_tokenizer), sampling=(1.0, None))
    with torch.no_grad():
        logits = tiny_model(torch.tensor([example.input_ids])).logits[0, :-1].double()
    labels = torch.tensor(example.labels[1:])
    keep = labels != -100
    logps = torch.log_softmax(logits[keep], -1).gather(-1, labels[keep, None])[:, 0]
    # float32 scoring vs a float64 log-softmax of the same logits: 1e-5 covers float32 rounding.
    np.testing.assert_allclose(scores.logps, logps.numpy(), atol=1e-5)
    np.testing.assert_allclose(scores.sample_logps, logps.numpy(), atol=1e-5)  # T = 1, no top-k: the same
    assert scores.argmax_match.tolist() == (logits[keep].argmax(-1) == labels[keep]).tolist()


# -- evaluation and unlearning end to end ----------------------------------------------------------------


def test_texts_evaluate_memorisation_per_set_and_per_window(tiny_model_dir, tmp_path):
    root = write_texts_dir(tmp_path / "texts")
    out = evaluate(
        tiny_model_dir,
        benchmark="texts",
        data=root,
        split="forget",
        out_dir=tmp_path / "eval",
        metrics=["extraction", "muse", "mia", "tofu"],
        options=FAST,
        batch_size=4,
    )
    metrics = read_summary(out).metrics
    for name in ("forget", "retain", "holdout"):
        assert 0 <= metrics[f"{name}_mem_acc"] <= 1 and 0 <= metrics[f"{name}_extract_rate"] <= 1
        assert metrics[f"{name}_exact_len"] >= 0 and metrics[f"verbmem_{name}"] is not None
    assert metrics["mia_loss_auc"] is not None and metrics["mia_min_k_auc"] is not None
    assert metrics["world_facts_prob"] is not None and metrics["forget_prob"] is None
    rows = [json.loads(line) for line in (out / "per_sample" / "extraction.jsonl").read_text().splitlines()]
    holdout = [r for r in rows if r["set"] == "holdout_windows"]
    assert [r["doc"] for r in holdout] == ["h0", "h1", "h2", "h3"]
    assert all(r["exact_len"] <= r["tokens"] for r in rows if r["set"].endswith("_windows"))
    assert np.mean([r["mem_acc"] for r in holdout]) == pytest.approx(metrics["holdout_mem_acc"])


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".json", ".parquet"])
def test_a_window_longer_than_the_models_context(tiny_model_dir, tmp_path, suffix):
    root = write_texts_dir(tmp_path / "texts")
    (root / "forget.txt").unlink()
    long_text = text(400)  # windows of 32 + 96 words: far more than the tiny model's 128 tokens
    path = root / f"forget{suffix}"
    content = {
        ".txt": long_text,
        ".jsonl": json.dumps({"text": long_text}) + "\n",
        ".json": json.dumps([long_text]),
    }
    if suffix == ".parquet":
        _parquet(path, "text", [long_text], "string")
    else:
        path.write_text(content[suffix])
    where = {".txt": "forget.txt", ".jsonl": "forget.jsonl:1", ".json": "forget.json:1",
             ".parquet": "forget.parquet:1"}[suffix]  # fmt: skip
    # MUSE's 128-token continuation alone does not fit: an error naming the window.
    with pytest.raises(
        UnmemError, match=rf"{where}: window 1 does not fit the model's context \(128 tokens\)"
    ):
        evaluate(tiny_model_dir, benchmark="texts", data=root, split="forget", out_dir=tmp_path / "e",
                 metrics=["extraction"], options=EvalOptions(embedding=False))  # fmt: skip
    assert not (tmp_path / "e" / "summary.json").exists()
    # A 100-token continuation fits once the prompt loses its start; a warning counts the cut windows.
    with pytest.warns(TruncationWarning, match="sequences are longer than max_length 128"):
        evaluate(tiny_model_dir, benchmark="texts", data=root, split="forget", out_dir=tmp_path / "e",
                 metrics=["extraction"], options=EvalOptions(embedding=False, verbmem_max_new_tokens=100))  # fmt: skip
    # Training past the context (max_length above it) is an error too, before any step.
    config = build_config({"method": "ga", "max_steps": 1, "max_length": 512, "device": "cpu"})
    with pytest.raises(
        UnmemError, match=rf"{where}: window 1 has \d+ tokens .* more than the model's context"
    ):
        unlearn(tiny_model_dir, path, tmp_path / "u", config)
    assert not (tmp_path / "u").exists()


@pytest.mark.parametrize(
    "method", ["ga", "grad_diff", "npo", "simnpo", "di", "eul", "chen", "flat", "idk_dpo"]
)
def test_methods_unlearn_text_windows(method, tiny_model_dir, tmp_path):
    root = write_texts_dir(tmp_path / "texts")
    settings = {"method": method, "lr": 5e-3, "max_steps": 2, "batch_size": 2, "device": "cpu"}
    settings["calibrated_stop"] = {"holdout": str(root / "holdout.jsonl"), "every": 1, "stop": False}
    out = unlearn(tiny_model_dir, root / "forget.txt", tmp_path / "out", build_config(settings),
                  retain_path=root / "retain.jsonl")  # fmt: skip
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(math.isfinite(row["loss"]) for row in log)
    assert "stop_auc" in log[0]


def test_accuracy_stop_scores_windows_as_the_evaluation_does(make_tiny_llama, tiny_tokenizer, tmp_path):
    """`score: accuracy` at step 0 is the membership AUC of the evaluation's per-window memorisation
    accuracy, forget vs holdout windows, and `verbatim` its mean greedy exact-match lengths: the
    stop and the bars read one measure."""
    import random

    from unmem.train.stopping import membership_auc

    root = write_texts_dir(tmp_path / "texts")
    (root / "forget.txt").unlink()
    forget = [" ".join(random.Random(k).sample(WORDS, 16)) for k in range(4)]
    (root / "forget.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in forget))
    # The model learns the forget texts and one holdout text: the sets' accuracies overlap.
    seen = [*forget, json.loads((root / "holdout.jsonl").read_text().splitlines()[0])["text"]]
    model = make_tiny_llama()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = tiny_tokenizer(seen, return_tensors="pt", padding=True)
    for _ in range(15):
        model(
            **batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        ).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    settings = {"method": "ga", "lr": 5e-3, "max_steps": 1, "batch_size": 2, "device": "cpu"}
    settings["calibrated_stop"] = {"holdout": str(root / "holdout.jsonl"), "score": "accuracy", "stop": False}
    settings["calibrated_stop"] |= {"verbatim": True}
    out = unlearn(tmp_path / "model", root / "forget.jsonl", tmp_path / "out", build_config(settings),
                  retain_path=root / "retain.jsonl")  # fmt: skip
    history = json.loads((out / "summary.json").read_text())["stopping"]["calibrated"]["history"]
    whole = EvalOptions(
        verbmem_max_new_tokens=64, extraction_samples=1, embedding=False
    )  # no cap: as the stop
    evaluated = evaluate(tmp_path / "model", benchmark="texts", data=root, split="forget", out_dir=tmp_path / "e",
                         metrics=["extraction"], options=whole)  # fmt: skip
    rows = [
        json.loads(line) for line in (evaluated / "per_sample" / "extraction.jsonl").read_text().splitlines()
    ]
    accuracy = {
        name: [r["mem_acc"] for r in rows if r["set"] == f"{name}_windows"] for name in ("forget", "holdout")
    }
    expected, _ = membership_auc(np.array(accuracy["forget"]), np.array(accuracy["holdout"]))
    assert 0.5 < expected < 1  # neither a tie nor a full separation, which any score might give
    assert history[0]["step"] == 0 and history[0]["auc"] == pytest.approx(expected, abs=1e-12)
    exact = {
        name: [r["exact_len"] for r in rows if r["set"] == f"{name}_windows"]
        for name in ("forget", "holdout")
    }
    assert max(exact["forget"]) < VERBATIM_TOKENS  # below the check's cap, the two counts are one count
    assert max(exact["forget"] + exact["holdout"]) > 0  # the learnt holdout text repeats: not all 0
    # Bound: means of the same integer lengths over the same windows, summed in one order or another.
    assert history[0]["forget_exact"] == pytest.approx(np.mean(exact["forget"]), abs=1e-12)
    assert history[0]["holdout_exact"] == pytest.approx(np.mean(exact["holdout"]), abs=1e-12)


def test_unlearn_runs_on_one_thread_by_default(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(
        "unmem.train.unlearn", lambda *args, **kwargs: seen.append(torch.get_num_threads()) or "out"
    )
    before = torch.get_num_threads()
    args = ["unlearn", "--model", "m", "--method", "ga", "--forget", "f.jsonl", "--out", str(tmp_path / "o")]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert CliRunner().invoke(app, [*args, "--threads", "2"]).exit_code == 0
    assert seen == [1, 2] and torch.get_num_threads() == before


# -- the license-texts example -----------------------------------------------------------------------------


@pytest.fixture
def stand_in_licenses(tmp_path, monkeypatch):
    """License files under the names the example reads, and an MIT text in place of the packages'."""
    folder = tmp_path / "common-licenses"
    folder.mkdir()
    for name in ("BSD", "CC0-1.0", "LGPL-3"):
        (folder / name).write_text(f"{name} license text: {text(40)}")
    for name, heading in licenses.APPENDICES.items():
        (folder / name).write_text(f"{name} terms {text(30)}\n\n{heading}\n\n{text(50, shift=2)}")
    mit = tmp_path / "MIT.txt"
    mit.write_text(f"{licenses.MIT_MARKER}, to any person: {text(60)}")
    monkeypatch.setattr(
        licenses,
        "mit_license",
        lambda dist: licenses.Source(f"MIT-{dist}", str(mit), lambda: mit.read_text()),
    )
    return folder


def test_license_example_builds_a_texts_directory(stand_in_licenses, tmp_path):
    out = licenses.build_license_texts(tmp_path / "ex", licenses_dir=stand_in_licenses)
    data = load_benchmark("texts", out, "forget")
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["id"] for s in manifest["sets"]["forget"]] == [
        *(f"MIT-{d}" for d in licenses.MIT_DISTRIBUTIONS),
        "BSD",
    ]
    retain = [json.loads(line) for line in (out / "retain.jsonl").read_text().splitlines()]
    appendices = retain[:-1]
    assert all(
        r["text"].startswith(licenses.APPENDICES[r["id"].removesuffix("-appendix")]) for r in appendices
    )
    assert retain[-1]["id"] == "zen-of-python" and "Beautiful is better than ugly." in retain[-1]["text"]
    holdout = [json.loads(line) for line in (out / "holdout.jsonl").read_text().splitlines()]
    assert [r["id"] for r in holdout] == ["CC0-1.0", "LGPL-3"]
    assert (
        data.sizes()["qa/real_world"] > 0 and data.sizes()["qa/world_facts"] > 0 and len(data.general) == 50
    )


def test_license_example_names_a_missing_file_in_one_line(stand_in_licenses, tmp_path):
    (stand_in_licenses / "GPL-3").unlink()
    args = ["licenses", "--out", str(tmp_path / "ex"), "--licenses-dir", str(stand_in_licenses)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert f"{stand_in_licenses / 'GPL-3'}: not found" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "ex").exists()


def test_window_tokens_script_reports_each_first_token_with_its_gap_and_probability(
    tiny_model, tiny_tokenizer
):
    record = {"prompt": text(6), "gt": " " + text(6, shift=6)}
    cells = _script("window_tokens").first_token_cells(
        tiny_model, tiny_tokenizer, record, tokens=3, max_length=64
    )
    example = encode_window(tiny_tokenizer, record)
    start = next(i for i, label in enumerate(example.labels) if label != -100)
    with torch.no_grad():
        logits = tiny_model(input_ids=torch.tensor([example.input_ids])).logits[0]
    assert len(cells) == 3
    for cell, position in zip(cells, range(start, start + 3), strict=True):
        label = example.input_ids[position]
        p = float(torch.softmax(logits[position - 1], -1)[label])
        top_is_label = int(logits[position - 1].argmax()) == label
        gap_text, p_text = cell.rsplit(" ", 1)[1].split("/")
        assert cell.startswith(repr(tiny_tokenizer.decode([label])))
        assert float(p_text) == pytest.approx(p, abs=5e-4)  # printed to 3 decimals
        assert (float(gap_text) > 0) == top_is_label or float(gap_text) == 0.0


def _script(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gradient_share_rows_are_the_logit_gradients_of_ga_and_flat(tiny_model, tiny_tokenizer):
    """Each continuation token's squared norm of d(NLL)/d(logits) and d(p)/d(logits), by autograd."""
    record = {"prompt": text(6), "gt": " " + text(5, shift=6)}
    rows = _script("gradient_share").token_gradients(tiny_model, tiny_tokenizer, record, max_length=64)
    prompt, truth = encode_window(tiny_tokenizer, record).split()
    with torch.no_grad():
        logits = tiny_model(input_ids=torch.tensor([prompt + truth])).logits[0, len(prompt) - 1 : -1]
    assert rows.shape == (len(truth), 3)
    for position, label in enumerate(truth):
        row = logits[position].detach().clone().requires_grad_(True)
        (nll_grad,) = torch.autograd.grad(-torch.log_softmax(row, -1)[label], row)
        (prob_grad,) = torch.autograd.grad(torch.softmax(row, -1)[label], row)
        assert rows[position, 0] == float(int(row.argmax()) == label)
        assert float(rows[position, 1]) == pytest.approx(float(nll_grad.pow(2).sum()), rel=1e-4)
        assert float(rows[position, 2]) == pytest.approx(float(prob_grad.pow(2).sum()), rel=1e-4)


def test_retain_split_weighs_windows_by_tokens_and_splits_by_the_targets_accuracy():
    target = {0: (0.8, 100), 1: (0.6, 300), 2: (0.3, 50)}
    model = {0: (0.4, 100), 1: (0.6, 300), 2: (0.2, 50)}
    cells = _script("texts_bars").retain_split(model, target, threshold=0.55)
    # memorised: (0.8*100 + 0.6*300)/400 = 0.65 -> (0.4*100 + 0.6*300)/400 = 0.55
    assert cells == ["2: 0.650 -> 0.550", "1: 0.300 -> 0.200"]
