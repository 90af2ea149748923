"""The bars of a `texts` experiment, one row per model: did unlearning forget the texts and keep the rest?

    python scripts/texts_bars.py runs/smollm2-texts

Reads the experiment's ``report_data.json`` (or, before the report, ``state.json``) and each
row's evaluation summary, and prints a
Markdown table against the target (the first row): forget-text memorisation accuracy within
``--acc-margin`` of the holdout texts', greedy verbatim continuation on forget no longer than on
holdout (exact-match length in tokens; and in words where the evaluation measured it),
retain-text memorisation within ``--acc-margin`` of the target's, general perplexity at most ``--ppl-ratio`` x the target's, NLU accuracy within ``--nlu-points``.
Also per row, from the per-window results: the longest exact match on forget and holdout windows,
and the one-sided Mann-Whitney p that the forget windows' exact-match lengths exceed the holdout's.
With ``--retain-split ACC``, a second table: each row's retain accuracy (token-weighted) on the
retain windows the target reproduces at accuracy >= ACC and on the others.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

COLUMNS = (
    ("forget_mem_acc", "forget acc"),
    ("holdout_mem_acc", "holdout acc"),
    ("retain_mem_acc", "retain acc"),
    ("forget_exact_len", "forget exact len"),
    ("holdout_exact_len", "holdout exact len"),
    ("forget_exact_words", "forget exact words"),
    ("holdout_exact_words", "holdout exact words"),
    ("verbmem_forget", "VerbMem forget"),
    ("verbmem_holdout", "VerbMem holdout"),
    ("mia_loss_auc", "MIA AUC"),
    ("general_ppl", "general ppl"),
    ("nlu_acc", "NLU"),
    ("model_utility", "utility"),
)


def experiment_rows(experiment: Path) -> list[tuple[str, str, str | None]]:
    """(row id, evaluation folder, run folder) of each row, the target first: from the report,
    or, for an experiment stopped before its report, from the evaluations it finished (state.json)."""
    report = experiment / "report_data.json"
    if report.is_file():
        data = json.loads(report.read_text())
        return [(row["id"], row["eval_dir"], row.get("run_dir")) for row in data["rows"]]
    stages = json.loads((experiment / "state.json").read_text())["stages"]
    names = [key.removeprefix("eval:") for key in stages if key.startswith("eval:")]
    return [(name, f"eval/{name}", None if name == "target" else f"runs/{name}") for name in names]


def bars(row: dict[str, Any], target: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """The bars a row misses ('' when it meets all of them)."""
    needed = ("forget_mem_acc", "holdout_mem_acc", "retain_mem_acc", "forget_exact_len", "holdout_exact_len")
    needed += ("general_ppl", "nlu_acc")
    if any(row.get(key) is None or target.get(key) is None for key in needed):
        return ["not measured (run the extraction and utility families)"]
    m, t = row, target
    checks = {
        "forget acc": m["forget_mem_acc"] <= m["holdout_mem_acc"] + args.acc_margin,
        "verbatim": m["forget_exact_len"] <= m["holdout_exact_len"],
        "retain acc": m["retain_mem_acc"] >= t["retain_mem_acc"] - args.acc_margin,
        "ppl": m["general_ppl"] <= args.ppl_ratio * t["general_ppl"],
        "NLU": m["nlu_acc"] >= t["nlu_acc"] - args.nlu_points / 100 - 1e-9,
    }
    if m.get("forget_exact_words") is not None and m.get("holdout_exact_words") is not None:
        checks["verbatim words"] = m["forget_exact_words"] <= m["holdout_exact_words"]
    return [name for name, ok in checks.items() if not ok]


def window_rows(eval_dir: Path) -> list[dict[str, Any]]:
    """The evaluation's per-window extraction results ([] when it has none)."""
    path = eval_dir / "per_sample" / "extraction.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def verbatim_cells(eval_dir: Path) -> list[str]:
    """Longest forget and holdout exact match, and the p that forget's lengths exceed holdout's."""
    from scipy.stats import mannwhitneyu

    rows = window_rows(eval_dir)
    forget = [r["exact_len"] for r in rows if r["set"] == "forget_windows"]
    holdout = [r["exact_len"] for r in rows if r["set"] == "holdout_windows"]
    if not forget or not holdout:
        return ["–", "–", "–"]
    p_value = mannwhitneyu(forget, holdout, alternative="greater").pvalue
    return [f"{max(forget):g}", f"{max(holdout):g}", f"{p_value:.2g}"]


def retain_windows(eval_dir: Path) -> dict[int, tuple[float, int]]:
    """Each retain window's (memorisation accuracy, continuation tokens), by window index."""
    return {
        r["index"]: (r["mem_acc"], r["tokens"]) for r in window_rows(eval_dir) if r["set"] == "retain_windows"
    }


def retain_split(model: dict[int, tuple[float, int]], target: dict[int, tuple[float, int]], threshold: float):
    """Token-weighted retain accuracy (target -> model) on the windows the target reproduces
    (accuracy >= ``threshold``) and on the others: which retain text a method lost."""
    cells = []
    for memorised in (True, False):
        ids = [i for i, (acc, _) in target.items() if (acc >= threshold) == memorised and i in model]
        tokens = sum(target[i][1] for i in ids)
        before = sum(target[i][0] * target[i][1] for i in ids) / tokens if tokens else float("nan")
        after = sum(model[i][0] * target[i][1] for i in ids) / tokens if tokens else float("nan")
        cells.append(f"{len(ids)}: {before:.3f} -> {after:.3f}")
    return cells


def print_retain_split(experiment: Path, rows: list[tuple[str, str, str | None]], threshold: float) -> None:
    target = retain_windows(experiment / rows[0][1])
    print(f"\n| row | retain windows the target reproduces (acc >= {threshold:g}) | other retain windows |")
    print("|---|---|---|")
    for name, eval_dir, _ in rows[1:]:
        model = retain_windows(experiment / eval_dir)
        if model and target:
            print(f"| {name} | " + " | ".join(retain_split(model, target, threshold)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("experiment", type=Path)
    parser.add_argument("--acc-margin", type=float, default=0.05)
    parser.add_argument("--ppl-ratio", type=float, default=1.05)
    parser.add_argument("--nlu-points", type=float, default=2.0)
    parser.add_argument(
        "--retain-split", type=float, metavar="ACC",
        help="also print each row's retain accuracy on the windows the target reproduces at >= ACC and on the rest",
    )  # fmt: skip
    args = parser.parse_args()
    rows = []
    listed = experiment_rows(args.experiment)
    for name, eval_dir, run_dir in listed:
        summary = args.experiment / eval_dir / "summary.json"
        if not summary.is_file():
            continue
        metrics = json.loads(summary.read_text())["metrics"]
        run = args.experiment / (run_dir or "-") / "summary.json"
        step = ""
        if run.is_file():
            info = json.loads(run.read_text())
            step = f"{info['published_step']}/{info['steps']}"
        rows.append((name, metrics, step, verbatim_cells(args.experiment / eval_dir)))
    target = rows[0][1]
    labels = [label for _, label in COLUMNS] + ["forget exact max", "holdout exact max", "verbatim p"]
    print("| row | " + " | ".join(labels) + " | stop step | misses |")
    print("|---" * (len(labels) + 3) + "|")
    for name, metrics, step, verbatim in rows:
        cells = [f"{metrics[key]:.3g}" if metrics.get(key) is not None else "–" for key, _ in COLUMNS]
        missed = "–" if name == "target" else (", ".join(bars(metrics, target, args)) or "none")
        print(f"| {name} | " + " | ".join(cells + verbatim) + f" | {step or '–'} | {missed} |")
    if args.retain_split is not None:
        print_retain_split(args.experiment, listed, args.retain_split)


if __name__ == "__main__":
    main()
