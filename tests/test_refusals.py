"""Refusal styles of FLAT and Chen et al.: a whole refusal, or the answer with its sensitive spans refused."""

from __future__ import annotations

import json

import pytest

from unmem.config import build_config
from unmem.data.collate import PromptFormat
from unmem.data.refusals import load_idk_answers, refusal_record
from unmem.errors import UnmemError
from unmem.methods.chen import ChenConfig
from unmem.methods.flat import FLATConfig
from unmem.train import unlearn
from unmem.train.unlearning import _make_idk

RECORD = {
    "question": "Where was Nelia Hartek born?",
    "answer": "Nelia Hartek was born in Maelstow, near Maelstow Bay.",
    "sensitive": ["Maelstow", "not in the answer"],
}


def first(options: list[str]) -> str:
    return options[0]


def test_span_refusal_keeps_the_answer_and_refuses_each_span():
    filler = load_idk_answers("span")[0]
    assert refusal_record(RECORD, first, "span") == {
        "question": RECORD["question"],
        "answer": f"Nelia Hartek was born in {filler}, near {filler} Bay.",
    }
    assert refusal_record(RECORD, first, "whole")["answer"] == load_idk_answers("qa")[0]
    window = {"prompt": "Permission is hereby granted", "gt": " free of charge"}
    assert refusal_record(window, first, "span") == {
        "prompt": window["prompt"],
        "gt": load_idk_answers("text")[0],
    }


def test_span_refusals_ship_with_the_package():
    spans = load_idk_answers("span")
    assert len(spans) >= 5 and len(set(spans)) == len(spans) and all(s == s.strip() for s in spans)
    # None starts with the first words a whole refusal teaches every question ("I", "I'm").
    assert not any(s.split()[0] in {"I", "I'm"} for s in spans)


def test_span_refusal_needs_a_sensitive_span_in_the_answer():
    with pytest.raises(ValueError, match="refusal='span' replaces the sensitive spans"):
        refusal_record({**RECORD, "sensitive": ["Oslo"]}, first, "span")
    with pytest.raises(ValueError, match=r"unknown refusal 'partial'; known: whole, span"):
        FLATConfig(refusal="partial")
    with pytest.raises(ValueError, match=r"unknown refusal 'partial'; known: whole, span"):
        ChenConfig(refusal="partial")


def test_idk_examples_follow_the_refusal_style(tiny_tokenizer):
    fmt = PromptFormat.for_tokenizer(tiny_tokenizer)
    (example,) = _make_idk([RECORD], tiny_tokenizer, fmt, 128, seed=0, style="span")
    answer_ids = [t for t, label in zip(example.input_ids, example.labels, strict=True) if label != -100]
    answer = tiny_tokenizer.decode(answer_ids)
    assert answer.startswith(" Nelia Hartek was born in") or answer.startswith("Nelia Hartek was born in")
    assert "Maelstow" not in answer and any(s in answer for s in load_idk_answers("span"))


def test_span_refusal_without_spans_fails_before_any_model_loads(tiny_model_dir, tmp_path):
    forget = tmp_path / "forget.jsonl"
    rows = [RECORD, {"question": "What does she write?", "answer": "Crime fiction.", "sensitive": []}]
    forget.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = build_config(
        {"method": "flat", "max_steps": 1, "device": "cpu", "method_args": {"refusal": "span"}}
    )
    with pytest.raises(UnmemError, match=r"forget\.jsonl:2: method 'flat' with refusal='span'"):
        unlearn(tiny_model_dir, forget, tmp_path / "out", config)
    assert not (tmp_path / "out").exists()
