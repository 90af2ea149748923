"""docs/extending.md's recipes work: a metric family and a benchmark layout defined here, in one
"file" each, show up in `unmem eval`, the report and the experiment runner without touching unmem."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unmem.cli import app
from unmem.data.benchmarks import EvalData, UnlearnFiles, nlu_items
from unmem.data.benchmarks import registry as benchmark_registry
from unmem.data.benchmarks.base import require_file
from unmem.errors import UnmemError
from unmem.evaluation import FamilyContext, FamilyResult, read_summary, register_family
from unmem.evaluation import registry as family_registry
from unmem.io import read_records


@pytest.fixture
def answer_length_family(monkeypatch):
    """A family in one "file": the mean length in words of the model's greedy forget answers."""
    monkeypatch.setattr(family_registry, "_FAMILIES", dict(family_registry.all_families()))

    def run(ctx: FamilyContext) -> FamilyResult:
        answers = ctx.session.answers("forget")
        words = [len(answer.split()) for answer in answers]
        rows = [{"set": "forget", "index": i, "words": n} for i, n in enumerate(words)]
        return FamilyResult({"forget_answer_words": sum(words) / len(words)}, {"n": len(words)}, rows)

    register_family(
        "answer_length",
        run,
        ids=("forget_answer_words",),
        supports=lambda inputs: bool(inputs.data.qa.get("forget")),
        description="how long the model's forget answers are",
        headline=("forget_answer_words",),
        order=5,  # before TOFU: the report shows its metric first
    )


def test_a_family_defined_in_one_file_shows_up_in_eval_and_report(
    answer_length_family, tiny_model_dir, tmp_path
):
    from unmem.data.world import WorldConfig, generate_world

    world = generate_world(WorldConfig.from_preset("micro"), tmp_path / "world")
    out = tmp_path / "exp" / "eval" / "target"
    args = ["eval", "--model", str(tiny_model_dir), "--data", str(world), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--metrics", "answer_length,utility", "--max-samples", "3"])
    assert result.exit_code == 0, result.output
    assert "forget_answer_words" in result.output  # the CLI table
    summary = read_summary(out)
    assert (
        summary.metric_ids["answer_length"] == ["forget_answer_words"]
        and summary.metrics["forget_answer_words"] > 0
    )
    assert len(read_records(out / "per_sample" / "answer_length.jsonl")) == 3
    report = CliRunner().invoke(app, ["report", str(tmp_path / "exp")])
    assert report.exit_code == 0, report.output
    with (tmp_path / "exp" / "report" / "results.csv").open() as handle:
        header = next(csv.reader(handle))
    assert header[7] == "forget_answer_words"  # first metric column: its headline, order 5


def load_csv_qa(path: Path, split: str) -> EvalData:
    """A layout in one "file": ``qa.csv`` (question,answer,member); members are the forget set."""
    root = Path(path)
    if not (root / "qa.csv").is_file():
        raise UnmemError(f"{root / 'qa.csv'}: file not found")
    with (root / "qa.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    qa = [{"question": r["question"], "answer": r["answer"]} for r in rows]
    members = [r["member"] == "1" for r in rows]
    return EvalData(
        benchmark="csv_qa",
        root=root,
        split=split,
        qa={
            "forget": [q for q, m in zip(qa, members, strict=True) if m],
            "holdout": [q for q, m in zip(qa, members, strict=True) if not m],
        },
        nlu=nlu_items(),
        files=[root / "qa.csv"],
    )


def csv_unlearn_files(path: Path, split: str) -> UnlearnFiles:
    return UnlearnFiles(require_file(Path(path), "forget"), None)


@pytest.fixture
def csv_layout(monkeypatch):
    monkeypatch.setattr(benchmark_registry, "_BENCHMARKS", dict(benchmark_registry.all_benchmarks()))
    benchmark_registry.register_benchmark(
        "csv_qa", load_csv_qa, csv_unlearn_files, description="qa.csv with a member column"
    )


def test_a_benchmark_layout_defined_in_one_file_evaluates(csv_layout, tiny_model_dir, tmp_path):
    data = tmp_path / "csvdata"
    data.mkdir()
    lines = ["question,answer,member"] + [
        f"Who is person {i}?,Person {i} is a poet.,{i % 2}" for i in range(8)
    ]
    (data / "qa.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "eval"
    args = ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--benchmark", "csv_qa", "--metrics", "tofu,mia"])
    assert result.exit_code == 0, result.output
    metrics = read_summary(out).metrics
    assert metrics["forget_prob"] is not None and metrics["mia_loss_auc"] is not None
    assert metrics["forget_truth_ratio"] is None  # plain QA: no perturbed answers
    unknown = CliRunner().invoke(app, [*args, "--benchmark", "csv"])
    assert unknown.exit_code == 2 and "known: world, tofu, muse, files, texts, csv_qa" in unknown.output


def test_an_attack_defined_in_one_file_joins_the_robustness_audit(monkeypatch, tiny_model_dir, tmp_path):
    """docs/extending.md's weight-noise attack: registered here, audited and reported by name."""
    import copy

    import torch

    from unmem.data.world import WorldConfig, generate_world
    from unmem.evaluation.attacks import base as attack_registry
    from unmem.evaluation.attacks.base import Attacked, register_attack

    monkeypatch.setattr(attack_registry, "_ATTACKS", dict(attack_registry.all_attacks()))

    def apply(session):
        noisy = copy.deepcopy(session.model)
        with torch.no_grad():
            for p in noisy.parameters():
                p.add_(1e-3 * torch.randn_like(p))
        forget = session.data.qa["forget"]
        return Attacked(noisy, session.data, list(range(len(forget))), info={"sigma": 1e-3})

    register_attack("weight_noise", apply, kind="quantize", description="Gaussian noise of std 1e-3")
    world = generate_world(WorldConfig.from_preset("micro"), tmp_path / "world")
    out = tmp_path / "eval"
    args = ["eval", "--model", str(tiny_model_dir), "--data", str(world), "--out", str(out)]
    result = CliRunner().invoke(
        app, [*args, "--metrics", "robustness", "--attacks", "weight_noise", "--max-samples", "3"]
    )
    assert result.exit_code == 0, result.output
    summary = read_summary(out)
    assert summary.metrics["robust_weight_noise_forget_prob"] is not None
    assert 0 <= summary.metrics["robust_weight_noise_Q"] <= 1
    assert summary.details["robustness"]["attacks"]["weight_noise"]["sigma"] == 1e-3
