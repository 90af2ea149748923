"""Does the built-in benchmark separate "has seen" from "has not seen", sharply? Time and measure it.

Builds a world, pretrains the base, fine-tunes the target and the retain model of
``--split`` (timed: the cold start), a second split's retain model (reusing the base),
and retain models with other fine-tuning seeds (the noise floor); times a cached
``unmem train``. Then measures every acceptance check of the benchmark:

- target exact memorisation of the forget answers; forget quality target vs retain;
  LOSS membership AUC forget vs holdout for target and retain;
- the noise floor: forget quality between every pair of retain models (seeds);
- the utility instruments on the target: probability, ROUGE-L recall and truth ratio
  on retain, real_world and world_facts, and model utility (their harmonic mean);
- refusals: the target's token-mean NLL of every shipped refusal after the forget and
  the holdout questions, and what greedy decoding answers to holdout questions;
- sensitivity: model utility after 0, 10, 20, 40 steps of gradient ascent on the forget set.

TOFU numbers come from ``unmem eval`` itself (``unmem.evaluation``, its conventions: the
answer is the truth ratio's denominator on real_world / world_facts, the paraphrase on
forget / retain; eos left out of exact memorisation), so they are what a user sees.

Run: ``python benchmarks/world_acceptance.py --out runs/acceptance`` (``--preset micro
--models '{"preset": "tiny"}'`` for a quick look). Prints a table; writes ``acceptance.json``
and ``acceptance.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unmem.data import vocabulary as vocab
from unmem.data.collate import PromptFormat
from unmem.data.refusals import load_idk_answers
from unmem.data.world import World, WorldConfig, generate_world
from unmem.evaluation import evaluate, read_summary
from unmem.evaluation.reference import per_sample_column
from unmem.io import write_json
from unmem.layout import EvalDir
from unmem.metrics import scoring, tofu
from unmem.models import load_model
from unmem.pretrain import PretrainConfig, base_corpus, corpus, model_name, retain_name, train_world_models

GA_STEPS = (0, 10, 20, 40)
UTILITY_IDS = (
    *(f"{s}_{m}" for s in ("retain", "real_world", "world_facts") for m in ("prob", "rouge", "truth_ratio")),
    "model_utility",
)
FMT = PromptFormat()


def evaluate_model(
    model_dir: Path, world: World, split: str, out: Path, families: list[str], retain: Path | None = None
) -> tuple[dict[str, Any], list[float] | None]:
    """``unmem eval`` metrics of a model and its per-question forget truth ratios."""
    path = evaluate(
        model_dir,
        data=world.root,
        out_dir=out,
        split=split,
        retain_model=retain,
        metrics=families,
        device="cpu",
        threads=1,
    )
    ratios = per_sample_column(EvalDir(path).per_sample("tofu"), "forget", "truth_ratio")
    return read_summary(path).metrics, ratios


def refusal_nll(model: Any, tokenizer: Any, questions: list[str]) -> float:
    """Token-mean NLL of every shipped refusal after every question, averaged."""
    refusals = load_idk_answers()
    groups = scoring.grouped_answer_scores(model, tokenizer, questions, [refusals] * len(questions), FMT)
    return float(np.mean([s.nll for group in groups for s in group]))


def classify_answers(questions: list[str], answers: list[str], known_words: set[str]) -> dict[str, Any]:
    """What greedy decoding says about people no model saw.

    ``refusal``: one of the shipped refusals. ``fluent``: every word is a word of the
    training text or of the question (case aside). ``blended_name``: fluent but for a name
    built from the world's name syllables that belongs to nobody ("Jorricridge"), a
    wrong answer about a half-recognised person. ``fragments``: any other word, i.e. the
    byte-level pieces a model emits when it cannot say something.
    """
    refusals = set(load_idk_answers())
    syllables = "|".join(sorted({*vocab.FIRST_STARTS, *vocab.LAST_STARTS}, key=len, reverse=True))
    endings = "|".join(sorted({*vocab.FIRST_ENDS, *vocab.LAST_ENDS}, key=len, reverse=True))
    name_shaped = re.compile(rf"(?:{syllables})(?:{endings})+(?:'s)?")
    kinds = []
    for question, answer in zip(questions, answers, strict=True):
        unknown = [
            word
            for word in re.findall(r"[A-Za-z']+", answer)
            if word.lower() not in known_words and word.lower() not in question.lower()
        ]
        if answer in refusals:
            kinds.append("refusal")
        elif not answer.strip() or any(not name_shaped.fullmatch(word) for word in unknown):
            kinds.append("fragments")
        else:
            kinds.append("blended_name" if unknown else "fluent")
    counts = {kind: kinds.count(kind) for kind in ("refusal", "fluent", "blended_name", "fragments")}
    return counts | {
        "fragment_examples": [a for a, k in zip(answers, kinds, strict=True) if k == "fragments"][:5]
    }


def training_words(world: World) -> set[str]:
    qa, texts = corpus(world, None)
    dialogue, base_texts = base_corpus(world)
    text = " ".join(texts + base_texts + [f"{r['question']} {r['answer']}" for r in qa + dialogue])
    return {word.lower() for word in re.findall(r"[A-Za-z']+", text)}


def refusals_and_answers(model_dir: Path, world: World, split: str) -> dict[str, Any]:
    """Can the model say the shipped refusals, and what does it answer about unseen people?"""
    model, tokenizer = load_model(model_dir, device="cpu")
    forget = [r["question"] for r in world.qa(split)]
    holdout = [r["question"] for r in world.qa(split.replace("forget", "holdout"))]
    answers = scoring.generate_answers(model, tokenizer, holdout, FMT, max_new_tokens=32)
    return {
        "refusal_nll_forget": refusal_nll(model, tokenizer, forget),
        "refusal_nll_holdout": refusal_nll(model, tokenizer, holdout),
        "holdout_answers": classify_answers(holdout, answers, training_words(world)),
    }


def ga_utility_curve(target: Path, world: World, split: str, out: Path, lr: float) -> list[dict]:
    """Model utility after 0, 10, 20, 40 gradient-ascent steps on the forget set (constant lr)."""
    from unmem.config import build_config
    from unmem.train import unlearn

    curve = []
    for steps in GA_STEPS:
        model_dir = target
        if steps:
            settings = {"method": "ga", "lr": lr, "max_steps": steps, "epochs": 100, "batch_size": 16}
            run = unlearn(
                target,
                world.root / "qa" / f"{split}.jsonl",
                out / f"ga{steps}",
                build_config(settings | {"device": "cpu"}),
                overwrite=True,
            )
            model_dir = run
        metrics, _ = evaluate_model(model_dir, world, split, out / f"eval-ga{steps}", ["tofu"])
        curve.append({"steps": steps, **{key: metrics[key] for key in UTILITY_IDS}})
    return curve


def timed(timings: dict[str, Any], key: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    start = time.perf_counter()
    result = func(*args, **kwargs)
    timings[key] = round(time.perf_counter() - start, 1)
    return result


def build(args: argparse.Namespace, config: PretrainConfig) -> tuple[World, dict[str, Path], dict[str, Any]]:
    """World and every model, timing the cold start, a second split and a cached repeat."""
    timings: dict[str, Any] = {}
    world_dir, models_dir = args.out / "world", args.out / "models"
    if not (world_dir / "world.json").is_file():
        world_config = WorldConfig.from_preset(args.preset, seed=args.world_seed)
        timed(timings, "world", generate_world, world_config, world_dir)
    world = World.load(world_dir)
    # A cold start only when nothing was trained here before (the tokenizer is the first thing written).
    key = "base_target_retain" if not (models_dir / "tokenizer").is_dir() else "cached_models"
    models = timed(timings, key, train_world_models, world, models_dir, [args.split], config)
    if args.second_split:
        base_info = models_dir / "base" / "pretrain.json"
        before = base_info.stat().st_mtime_ns
        timed(timings, "second_split", train_world_models, world, models_dir, [args.second_split], config)
        timings["second_split_reused_base"] = base_info.stat().st_mtime_ns == before
    seeds = [int(s) for s in args.retain_seeds.split(",")]
    models |= timed(
        timings,
        "noise_floor_retains",
        train_world_models,
        world,
        models_dir,
        [args.split],
        config,
        retain_seeds=seeds,
    )
    # `unmem train` sets only these fields: time it when the rest are the defaults.
    cli_config = PretrainConfig(preset=config.preset, seed=config.seed, epochs=config.epochs)
    if args.time_cli and config.model_dump(exclude={"cores"}) == cli_config.model_dump(exclude={"cores"}):
        command = [
            sys.executable,
            "-m",
            "unmem",
            "train",
            "--world",
            str(world_dir),
            "--out",
            str(models_dir),
        ]
        command += ["--preset", config.preset, "--seed", str(config.seed), "--epochs", str(config.epochs)]
        command += ["--forget-split", args.split]
        timed(timings, "cached_cli_repeat", subprocess.run, command, check=True, capture_output=True)
    return world, models, timings


def measure(args: argparse.Namespace, world: World, models: dict[str, Path], config: PretrainConfig) -> dict:
    """Every acceptance number except timings."""
    evals = args.out / "eval"
    retain = models[retain_name(args.split)]
    target, _ = evaluate_model(
        models["target"], world, args.split, evals / "target", ["tofu", "mia", "utility"], retain
    )
    ratios, mia_retain = {}, None
    for seed in [int(s) for s in args.retain_seeds.split(",")]:
        name = model_name(args.split, seed, config)
        families = ["tofu", "mia"] if name == retain.name else ["tofu"]
        metrics, ratios[f"seed{seed}"] = evaluate_model(
            models[name], world, args.split, evals / name, families
        )
        mia_retain = metrics.get("mia_loss_auc", mia_retain)
    floor = tofu.noise_floor(ratios)
    info = {name: json.loads((path / "pretrain.json").read_text()) for name, path in models.items()}
    info["base"] = json.loads((models["target"].parent / "base" / "pretrain.json").read_text())
    ga = (
        []
        if args.skip_ga
        else ga_utility_curve(models["target"], world, args.split, args.out / "ga", args.ga_lr)
    )
    return {
        "parameters": info["target"]["parameters"],
        "target": {
            "exact_mem_forget": target["forget_exact_mem"],
            **{key: target[key] for key in UTILITY_IDS},
            "general_ppl": target["general_ppl"],
            **refusals_and_answers(models["target"], world, args.split),
        },
        "forget_quality_target_vs_retain": target["forget_quality"],
        "forget_quality_target_vs_retain_log10": target["forget_quality_log10"],
        "mia_loss_auc_target": target["mia_loss_auc"],
        "mia_loss_auc_retain": mia_retain,
        "noise_floor": {"median": floor.value, **floor.extra},
        "ga_utility": ga,
        "train": {
            name: {
                k: data[k]
                for k in ("train_seconds", "tokens", "tokens_per_second", "padding_fraction", "final_loss")
            }
            for name, data in info.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/acceptance"))
    parser.add_argument("--preset", default="default", help="world preset")
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--split", default="forget10")
    parser.add_argument("--second-split", default="forget05", help="'' to skip")
    parser.add_argument(
        "--retain-seeds", default="0,1,2", help="fine-tuning seeds of the noise floor's retain models"
    )
    parser.add_argument(
        "--models", default="{}", help='PretrainConfig fields as JSON, e.g. {"preset": "tiny"}'
    )
    parser.add_argument("--ga-lr", type=float, default=5e-4)
    parser.add_argument("--skip-ga", action="store_true")
    parser.add_argument("--time-cli", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = PretrainConfig(**json.loads(args.models))
    load = os.getloadavg()
    world, models, timings = build(args, config)
    result = {
        "world": args.preset,
        "models": config.model_dump(),
        "load_before": [round(x, 2) for x in load],
        **measure(args, world, models, config),
        "seconds": timings,
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    result["checks"] = checks(result)
    write_json(args.out / "acceptance.json", result)
    table = "\n".join(
        f"| {name} | {value} | {bar} | {'yes' if ok else 'NO'} |" for name, value, bar, ok in result["checks"]
    )
    (args.out / "acceptance.md").write_text(
        "| check | value | bar | met |\n|---|---|---|---|\n" + table + "\n"
    )
    print(json.dumps(result, indent=2))
    print(table)


def checks(r: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """Every acceptance bar of the benchmark: (check, measured, bar, met)."""
    t, noise = r["target"], r["noise_floor"]
    curve = [row["model_utility"] for row in r["ga_utility"]]
    seconds = r["seconds"]
    cold = (
        seconds.get("world", 0) + seconds["base_target_retain"] if "base_target_retain" in seconds else None
    )
    rows = [
        (
            "target exact memorisation, forget",
            t["exact_mem_forget"],
            ">= 0.95",
            t["exact_mem_forget"] >= 0.95,
        ),
        (
            "forget quality target vs retain",
            r["forget_quality_target_vs_retain"],
            "<= 1e-5",
            r["forget_quality_target_vs_retain"] <= 1e-5,
        ),
        ("LOSS MIA AUC target", r["mia_loss_auc_target"], ">= 0.9", r["mia_loss_auc_target"] >= 0.9),
        (
            "LOSS MIA AUC retain",
            r["mia_loss_auc_retain"],
            "0.5 ± 0.1",
            abs(r["mia_loss_auc_retain"] - 0.5) <= 0.1,
        ),
        (
            "noise floor: median forget quality, retain pairs",
            noise["median"],
            ">= 0.3",
            noise["median"] >= 0.3,
        ),
        ("noise floor: min forget quality, retain pairs", noise["min"], "> 0.05", noise["min"] > 0.05),
    ]
    for name in ("real_world", "world_facts"):
        rows += [
            (f"target {name} normalised probability", t[f"{name}_prob"], ">= 0.6", t[f"{name}_prob"] >= 0.6),
            (
                f"target {name} truth ratio max(0, 1-R)",
                t[f"{name}_truth_ratio"],
                ">= 0.5",
                t[f"{name}_truth_ratio"] >= 0.5,
            ),
        ]
    rows += [
        ("target retain probability", t["retain_prob"], ">= 0.8", t["retain_prob"] >= 0.8),
        ("target model utility", t["model_utility"], ">= 0.5", t["model_utility"] >= 0.5),
        (
            "target refusal NLL after forget questions",
            t["refusal_nll_forget"],
            "<= 1.5",
            t["refusal_nll_forget"] <= 1.5,
        ),
        (
            "target refusal NLL after holdout questions",
            t["refusal_nll_holdout"],
            "<= 1.5",
            t["refusal_nll_holdout"] <= 1.5,
        ),
        (
            "holdout answers: refusal / fluent / blended name / fragments",
            "/".join(
                str(t["holdout_answers"][k]) for k in ("refusal", "fluent", "blended_name", "fragments")
            ),
            "0 fragments",
            t["holdout_answers"]["fragments"] == 0,
        ),
        (
            "model utility after 0/10/20/40 GA steps",
            "/".join(f"{u:.3f}" for u in curve),
            "falls",
            bool(curve) and all(a > b for a, b in itertools.pairwise(curve)),
        ),
    ]
    if "second_split" in seconds:
        reused = seconds["second_split_reused_base"]
        rows.append(
            ("second split: base reused, seconds", f"{reused}, {seconds['second_split']}", "reused", reused)
        )
    if cold is not None:
        rows.append(("cold start: world + base + target + retain (s)", cold, "<= 300", cold <= 300))
    if "cached_cli_repeat" in seconds:
        rows.append(
            (
                "cached `unmem train` repeat (s)",
                seconds["cached_cli_repeat"],
                "<= 10",
                seconds["cached_cli_repeat"] <= 10,
            )
        )
    return [
        (name, value if isinstance(value, str) else f"{value:.3g}", bar, ok) for name, value, bar, ok in rows
    ]


if __name__ == "__main__":
    main()
