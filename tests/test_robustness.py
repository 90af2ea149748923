"""The robustness audit (issue 19): the attacks' formulas on hand-made tensors, each attack on the
micro world with a tiny model that memorised it, the retain baseline under the same budget, and
the audited model left as it was."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from unmem.data.collate import PromptFormat
from unmem.errors import UnmemError
from unmem.evaluation import EvalOptions, evaluate
from unmem.evaluation.attacks.base import all_attacks
from unmem.evaluation.attacks.prompts import with_context
from unmem.evaluation.attacks.quantize import NF4_LEVELS, nf4_per_block, quantize_copy, rtn_per_channel
from unmem.evaluation.attacks.relearn import forget_halves
from unmem.evaluation.families.robustness import quantization_robustness, relearn_robustness
from unmem.io import hash_files
from unmem.metrics import scoring
from unmem.models import train_tokenizer
from unmem.train.finetune import FinetuneConfig, finetune_in_memory

# Float32 arithmetic on values of order 1: a few roundings of 2^-24 relative error each.
F32 = 1e-6


# -- the formulas, on hand-made tensors ------------------------------------------------------------


def test_rtn_per_channel_rounds_each_row_on_its_own_scale():
    w = torch.tensor([[0.5, -1.0, 0.26], [0.0, 0.0, 0.0], [2.0, 0.1, -0.7]])
    # 4 bits: 7 levels a side. Row 0, absmax 1: 0.5*7 = 3.5 -> 4 (half to even), -7, 1.82 -> 2;
    # decoded x/7. Row 1: all zero stays zero. Row 2, absmax 2: x*3.5 = 7, 0.35 -> 0, -2.45 -> -2; x*2/7.
    expected = np.array([[4 / 7, -1.0, 2 / 7], [0.0, 0.0, 0.0], [2.0, 0.0, -4 / 7]])
    np.testing.assert_allclose(rtn_per_channel(w, 4).double().numpy(), expected, atol=F32)
    # 8 bits, row 0: 0.26*127 = 33.02 -> 33, decoded 33/127.
    assert rtn_per_channel(w, 8)[0, 2].item() == pytest.approx(33 / 127, abs=F32)
    assert rtn_per_channel(w, 8).dtype == w.dtype


def test_nf4_rounds_each_block_to_the_nearest_level():
    w = torch.tensor([1.0, -0.5, 0.1, 0.0, 0.2, 0.4])
    # Blocks of 4: [1, -0.5, 0.1, 0] (absmax 1) and [0.2, 0.4] (absmax 0.4, scaled 0.5, 1).
    # -0.5 is nearest -0.5251 (level 2); 0.1 lies below the midpoint (0.0796 + 0.1609) / 2 = 0.1203 ->
    # 0.0796; scaled 0.5 lies below (0.4407 + 0.5626) / 2 = 0.5017 -> 0.4407, decoded 0.4407 * 0.4.
    levels = NF4_LEVELS
    expected = [1.0, levels[2], levels[8], 0.0, levels[12] * 0.4, 0.4]
    np.testing.assert_allclose(nf4_per_block(w, block=4).double().numpy(), expected, atol=F32)


def test_nf4_and_rtn_match_bitsandbytes_value_for_value():
    bnb = pytest.importorskip("bitsandbytes.functional")
    torch.manual_seed(0)
    w = torch.randn(64, 128) * 0.05
    packed, state = bnb.quantize_4bit(w, blocksize=64, quant_type="nf4")
    assert torch.equal(nf4_per_block(w, 64), bnb.dequantize_4bit(packed, state))
    codes, absmax, _ = bnb.int8_vectorwise_quant(w)
    ours = rtn_per_channel(w, 8)
    assert torch.equal(torch.round(ours * (127 / absmax[:, None])).to(torch.int8), codes)
    assert bnb.get_4bit_type("nf4", device="cpu").tolist() == list(NF4_LEVELS)


def test_quantize_copy_rounds_the_linear_weights_of_a_copy_only(make_tiny_llama):
    model = make_tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantize_copy(model, lambda w: rtn_per_channel(w, 4))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # the source model is untouched
    q_state = quantized.state_dict()
    assert torch.equal(q_state["lm_head.weight"], before["lm_head.weight"])  # the head stays
    assert torch.equal(q_state["model.embed_tokens.weight"], before["model.embed_tokens.weight"])
    weight = q_state["model.layers.0.mlp.up_proj.weight"]
    assert not torch.equal(weight, before["model.layers.0.mlp.up_proj.weight"])
    assert max(len(torch.unique(row)) for row in weight) <= 15  # 4-bit codes: -7..7


def test_robustness_numbers_by_hand():
    # R: unlearned gained 0.4 (0.1 -> 0.5), retain gained 0.1 (0.2 -> 0.3): 0.1 / 0.4 = 0.25.
    assert relearn_robustness(0.1, 0.5, 0.2, 0.3) == pytest.approx(0.25)
    assert relearn_robustness(0.3, 0.2, 0.2, 0.5) == 1.0  # lost probability: nothing came back
    assert relearn_robustness(0.1, 0.2, 0.3, 0.6) == 1.0  # gained less than a never-trained model
    assert relearn_robustness(0.1, 0.3, 0.5, 0.4) == 0.0  # gained while the retain model lost
    # Q: 0.2 before, 0.8 after quantization: 0.25; lower after: 1.
    assert quantization_robustness(0.2, 0.8) == pytest.approx(0.25)
    assert quantization_robustness(0.2, 0.1) == 1.0


def test_halves_and_context_keep_each_person_together():
    records = [
        {"entity_id": e, "question": f"q{e}{i}", "answer": f"a{e}{i}."} for e in "ab" for i in range(3)
    ]
    relearned, scored = forget_halves(records)
    assert relearned == [0, 2, 3, 5] and scored == [1, 4]
    asked = with_context(records, 2)
    assert asked[0]["question"] == "aa1. aa2. qa0"  # the next two facts of person a, cyclically
    assert asked[5]["question"] == "ab0. ab1. qb2"
    assert with_context(records[:1], 2)[0]["question"] == "qa0"  # nobody else to quote


def test_sampled_answers_repeat_with_the_seed_and_leave_the_global_rng(tiny_model, tiny_tokenizer):
    fmt = PromptFormat.for_tokenizer(tiny_tokenizer)
    questions = ["Where was Ilvan Marek born?", "What genre does Sela Kovar write?"]
    state = torch.get_rng_state()
    first = scoring.sample_answers(tiny_model, tiny_tokenizer, questions, fmt, samples=3, max_new_tokens=6)
    assert torch.equal(torch.get_rng_state(), state)
    again = scoring.sample_answers(tiny_model, tiny_tokenizer, questions, fmt, samples=3, max_new_tokens=6)
    assert first == again and [len(group) for group in first] == [3, 3]
    assert len({a for group in first for a in group}) > 1  # a random model's samples differ


def test_in_memory_fine_tuning_trains_the_given_model_and_writes_nothing(
    make_tiny_llama, tiny_tokenizer, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    model = make_tiny_llama()
    records = [{"question": "Where was Ilvan Marek born?", "answer": "Ilvan Marek was born in Dunmore."}] * 4
    config = FinetuneConfig(lr=1e-2, epochs=5, batch_size=2, scheduler="constant", warmup_ratio=0.0)
    fmt = PromptFormat.for_tokenizer(tiny_tokenizer)

    def nll() -> float:
        return scoring.answer_token_scores(
            model, tiny_tokenizer, [records[0]["question"]], [records[0]["answer"]], fmt
        )[0].nll

    start = nll()
    info = finetune_in_memory(model, tiny_tokenizer, records, config, "test")
    assert info["steps"] == 10 and nll() < start
    assert not any(tmp_path.iterdir())
    with pytest.raises(UnmemError, match="LoRA"):
        finetune_in_memory(model, tiny_tokenizer, records, config.model_copy(update={"lora": True}), "test")


def test_unknown_attack_and_bad_budget_are_refused():
    from unmem.evaluation.families.robustness import check_settings
    from unmem.evaluation.options import EvalConfig, OptionError

    with pytest.raises(UnmemError, match=r"unknown attack 'quant_int3'.*known: relearn_forget"):
        check_settings(EvalConfig(options=EvalOptions(robust_attacks=("quant_int3",))))
    with pytest.raises(OptionError, match="relearn_lr"):
        EvalOptions(relearn_lr=0.0)


# -- each attack on the micro world ------------------------------------------------------------------


def _tiny_model(tokenizer, records, epochs: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    settings = FinetuneConfig(lr=1e-2, epochs=epochs, batch_size=8, warmup_ratio=0.0, max_length=128)
    finetune_in_memory(model, tokenizer, records, settings, "memorise")
    return model


@pytest.fixture(scope="module")
def micro_models(micro_world_dir, tmp_path_factory):
    """A target that memorised the micro world's QA (forget10 + retain90) and a retain model that
    never saw forget10, both tiny, saved as model directories."""
    qa = micro_world_dir / "qa"
    retain = [json.loads(line) for line in (qa / "retain90.jsonl").read_text().splitlines()]
    forget = [json.loads(line) for line in (qa / "forget10.jsonl").read_text().splitlines()]
    texts = [f"{r['question']} {r['answer']} {' '.join(r['perturbed_answer'])}" for r in retain + forget]
    tokenizer = train_tokenizer(texts, vocab_size=500)
    root = tmp_path_factory.mktemp("robustness")
    for name, records in (("target", retain + forget), ("retain", retain)):
        _tiny_model(tokenizer, records, epochs=40).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root / "target", root / "retain"


def _files_hash(folder: Path) -> str:
    return hash_files(sorted(p for p in folder.rglob("*") if p.is_file()))


@pytest.fixture(scope="module")
def audited(micro_world_dir, micro_models, tmp_path_factory):
    target, retain = micro_models
    hashes = (_files_hash(target), _files_hash(retain))
    out = tmp_path_factory.mktemp("audit") / "eval"
    evaluate(
        target, data=micro_world_dir, out_dir=out, retain_model=retain, metrics=["robustness"], batch_size=16
    )
    summary = json.loads((out / "summary.json").read_text())
    return summary, out, hashes


def test_every_attack_runs_and_reports_its_metrics(audited):
    summary, _, _ = audited
    metrics, details = summary["metrics"], summary["details"]["robustness"]
    assert set(details["attacks"]) == set(all_attacks())
    for name, spec in all_attacks().items():
        assert "skipped" not in details["attacks"][name], name
        assert metrics[f"robust_{name}_forget_rouge"] is not None
        if spec.kind == "sample":
            assert metrics[f"robust_{name}_forget_prob"] is None
            assert "sampling" in summary["reasons"][f"robust_{name}_forget_quality"]
            continue
        for metric in ("forget_prob", "forget_truth_ratio", "forget_quality", "mia_loss_auc", "extraction"):
            assert metrics[f"robust_{name}_{metric}"] is not None, (name, metric)
        if spec.kind in ("relearn", "quantize"):
            assert 0 <= metrics[f"robust_{name}_{'R' if spec.kind == 'relearn' else 'Q'}"] <= 1
    assert metrics["robust_forget_quality"] == min(
        metrics[f"robust_{n}_forget_quality"] for n, s in all_attacks().items() if s.kind != "sample"
    )


def test_the_audited_and_retain_models_are_unchanged_and_nothing_else_is_written(audited, micro_models):
    _, out, hashes = audited
    assert (_files_hash(micro_models[0]), _files_hash(micro_models[1])) == hashes
    written = {p.relative_to(out).parts[0] for p in out.rglob("*")}
    assert written <= {"summary.json", "per_sample", "retain_cache", ".unmem-output"}


def test_relearning_the_target_recovers_nothing_it_had_not_already(audited):
    summary, _, _ = audited
    attacks = summary["details"]["robustness"]["attacks"]
    half = attacks["relearn_forget"]
    # The target knows every fact: a step of relearning on half of them leaves the other half
    # where it was (it cannot recover what it never lost), within what one epoch moves anything.
    assert half["before"]["forget_prob"] > 0.6
    assert abs(half["after"]["forget_prob"] - half["before"]["forget_prob"]) < 0.05
    assert half["relearned_questions"] == 3 and half["steps"] == 1  # micro: 1 person, 6 facts; batch 8


def test_the_retain_baseline_ran_under_the_same_budget(audited):
    summary, out, _ = audited
    details = summary["details"]["robustness"]
    cached = [json.loads(p.read_text()) for p in (out / "retain_cache").rglob("robustness.json")]
    assert len(cached) == 1 and cached[0]["budget"] == details["budget"]
    for name, own in details["attacks"].items():
        if own.get("steps") is not None:
            assert cached[0]["attacks"][name]["info"]["steps"] == own["steps"], name
            assert cached[0]["attacks"][name]["info"]["lr"] == own["lr"] == EvalOptions().relearn_lr


def test_retain_results_of_another_budget_are_refused(micro_world_dir, micro_models, tmp_path):
    retain_eval = tmp_path / "retain-eval"
    options = EvalOptions(robust_attacks=("quant_int8",), relearn_epochs=2)
    evaluate(
        micro_models[1], data=micro_world_dir, out_dir=retain_eval, metrics=["robustness"], options=options
    )
    with pytest.raises(UnmemError, match="other settings"):
        evaluate(
            micro_models[0],
            data=micro_world_dir,
            out_dir=tmp_path / "eval",
            retain_results=retain_eval,
            metrics=["robustness"],
            options=EvalOptions(robust_attacks=("quant_int8",)),
        )


def test_what_the_data_lacks_is_skipped_with_the_reason(published_layouts, tiny_model_dir, tmp_path):
    tofu, _ = published_layouts
    options = EvalOptions(robust_attacks=("relearn_related", "prompt_paraphrase", "quant_int4"))
    evaluate(
        tiny_model_dir,
        benchmark="tofu",
        data=tofu,
        out_dir=tmp_path / "eval",
        metrics=["robustness"],
        max_samples=6,
        options=options,
    )
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["metrics"]["robust_relearn_related_forget_prob"] is None
    assert "no text about the forget people" in summary["reasons"]["robust_relearn_related_forget_prob"]
    assert summary["metrics"]["robust_prompt_paraphrase_forget_prob"] is not None  # TOFU has the field
    assert summary["metrics"]["robust_quant_int4_Q"] is not None
    assert "robust_quant_nf4_forget_prob" not in summary["metrics"]  # not selected


def test_an_attack_leaves_the_session_model_as_it_was(micro_world_dir, make_tiny_llama, tiny_tokenizer):
    from unmem.data.benchmarks import load_world
    from unmem.evaluation.families.robustness import audit
    from unmem.evaluation.session import ModelSession

    model = make_tiny_llama()
    before = copy.deepcopy(model.state_dict())
    data = load_world(micro_world_dir, "forget10")
    session = ModelSession(model, tiny_tokenizer, data, EvalOptions(sample_k=2), batch_size=16)
    done = audit(session)
    assert not done.skipped
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())


def test_unmem_run_audits_every_row_and_the_report_shows_it(micro_world_dir, micro_models, tmp_path):
    from typer.testing import CliRunner

    from unmem.cli import app

    target, retain = micro_models
    config = tmp_path / "exp.yaml"
    config.write_text(
        f"name: audit\nworld_dir: {micro_world_dir}\ntarget: {target}\nretain: {retain}\nsplit: forget10\n"
        "methods: [{method: grad_diff, lr: 1.0e-3, epochs: 2, batch_size: 2, device: cpu}]\n"
        "eval: {metrics: [tofu, robustness], batch_size: 16, device: cpu,\n"
        "       options: {robust_attacks: [relearn_forget, quant_int4, prompt_paraphrase]}}\n"
        "tracking: []\n"
    )
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = tmp_path / "out" / "report"
    header = (report / "results.csv").read_text().splitlines()[0].split(",")
    assert "robust_forget_quality" in header and "robust_quant_int4_Q" in header  # the CSV keeps them all
    page = (report / "report.md").read_text()
    main_table, audit = page.split("## Robustness audit")
    assert "robust_forget_quality" in main_table and "robust_quant_int4_Q" not in main_table
    for attack in ("relearn_forget", "quant_int4", "prompt_paraphrase"):
        assert attack in audit
    assert audit.count("| retain (gold standard) |") == 3  # forget quality, probability, R and Q
    html = (report / "report.html").read_text()
    assert "<h2>Robustness audit</h2>" in html
    assert html.count('alt="grad_diff: robustness audit"') == 1  # one plot per method
