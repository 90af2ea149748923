"""The ``unmem`` command line: parse arguments, call the library, print where results went.

User errors (:class:`~unmem.errors.UnmemError`) print as one red line and exit 2.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from unmem.errors import UnmemError, UnmemWarning

if TYPE_CHECKING:
    from unmem.results import EvalSummary

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Make language models forget, and measure that they did.",
)
console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
FIXABLE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def _show_warning(fallback: Callable[..., None], message: Any, category: type[Warning], *args: Any) -> None:
    """unmem's own warnings as one yellow line, without the source line Python adds."""
    if issubclass(category, UnmemWarning):
        console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
    else:
        fallback(message, category, *args)


def user_errors(func: F) -> F:
    """Turn UnmemError into a one-line message and exit code 2 instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = functools.partial(_show_warning, warnings.showwarning)
                return func(*args, **kwargs)
        except UnmemError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: completed work is kept; re-run the same command to resume")
            sys.exit(130)
        except OSError as exc:
            # What the user can fix (a full disk, a read-only or forbidden folder) is one line too.
            if exc.errno not in FIXABLE_ERRNOS:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            console.print(f"[bold red]error:[/] {where}{exc.strerror}", highlight=False, soft_wrap=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@app.command("methods")
@user_errors
def methods_cmd() -> None:
    """List the unlearning methods with a one-line description."""
    from unmem.methods.registry import all_methods

    table = Table("method", "needs", "description")
    for name, spec in all_methods().items():
        needs = ", ".join(
            word
            for word, flag in (
                ("ref", spec.needs_ref),
                ("retain", spec.needs_retain),
                ("idk", spec.needs_idk),
            )
            if flag
        )
        table.add_row(name, needs or "-", spec.description)
    Console().print(table)


@app.command("recipes")
@user_errors
def recipes_cmd(name: str | None = typer.Argument(None, help="A recipe to print whole.")) -> None:
    """List the shipped recipes (per-method settings measured to work), or print one."""
    from unmem.recipes import load_recipe, shipped_recipes

    if name is not None:
        print(load_recipe(name).path.read_text(), end="")
        return
    table = Table("recipe", "methods", "description")
    for recipe in map(load_recipe, shipped_recipes()):
        table.add_row(recipe.name, ", ".join(recipe.methods), recipe.description)
    Console().print(table)


@app.command("train")
@user_errors
def train_cmd(
    world: str = typer.Option(..., help="World directory made by `unmem world`."),
    out: str = typer.Option(..., help="Where the models go: OUT/base, OUT/target, OUT/retainNN."),
    preset: str = typer.Option("small", help="Model size: tiny, small, base or large."),
    forget_split: list[str] = typer.Option(
        ["forget10"], help="Train a retain model without each of these splits."
    ),
    seed: int = typer.Option(0, help="Fine-tuning seed (data order) of the target and its retain models."),
    retain_seeds: str | None = typer.Option(
        None,
        help="Comma-separated fine-tuning seeds of more retain models, e.g. 0,1,2: "
        "OUT/retain90-seed1, ... measure the noise floor (how alike two clean models look).",
    ),
    epochs: int | None = typer.Option(None, help="Fine-tuning epochs (default: PretrainConfig's)."),
    overwrite: bool = typer.Option(
        False, help="Retrain a model in OUT that was made with other settings (otherwise an error)."
    ),
) -> None:
    """Pretrain the base model, then fine-tune the target on the whole world and a retain model
    per forget split from it (all cached)."""
    from unmem.data.world import World
    from unmem.presets import get_preset
    from unmem.pretrain import build_pretrain_config, train_world_models

    loaded = World.load(world)
    get_preset(preset)
    unknown = [
        split for split in forget_split if split not in loaded.splits or not split.startswith("forget")
    ]
    if unknown:
        known = ", ".join(s for s in loaded.split_names() if s.startswith("forget"))
        raise UnmemError(f"unknown forget split '{unknown[0]}'; known: {known}")
    seeds = _int_list(retain_seeds, "--retain-seeds") if retain_seeds else []
    overrides = {"preset": preset, "seed": seed} | ({"epochs": epochs} if epochs is not None else {})
    config = build_pretrain_config(overrides)
    for path in train_world_models(
        loaded, out, forget_split, config, retain_seeds=seeds, overwrite=overwrite
    ).values():
        print(path)


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UnmemError(f"{option} '{text}': expected comma-separated integers, e.g. 0,1,2") from None


@app.command("unlearn")
@user_errors
def unlearn_cmd(
    model: str = typer.Option(
        ..., help="Model directory (Hugging Face layout) to unlearn from; never modified."
    ),
    method: str | None = typer.Option(None, help="Method id (see `unmem methods`)."),
    forget: str = typer.Option(
        ..., help="Question/answer pairs to forget (JSONL/JSON), or texts: a .txt file, `text` records."
    ),
    out: str = typer.Option(..., help="Output directory (must not exist unless --overwrite)."),
    retain: str | None = typer.Option(None, help="Question/answer pairs or texts to keep."),
    config: str | None = typer.Option(None, help="YAML with any UnlearnConfig fields."),
    recipe: str | None = typer.Option(
        None, help="Start from a recipe's settings for the method (`unmem recipes`; or a recipe file)."
    ),
    lora: bool | None = typer.Option(
        None, "--lora/--full", help="Train a LoRA adapter instead of all weights."
    ),
    lr: float | None = typer.Option(None, help="Learning rate."),
    epochs: int | None = typer.Option(None),
    max_steps: int | None = typer.Option(None),
    batch_size: int | None = typer.Option(None),
    grad_accum: int | None = typer.Option(None),
    seed: int | None = typer.Option(None),
    device: str | None = typer.Option(None, help="auto, cpu or cuda."),
    precision: str | None = typer.Option(None, help="fp32 or bf16."),
    reference: str | None = typer.Option(
        None, help="cached (default): the frozen reference's outputs once before training; live: every step."
    ),
    checkpoint_every: int | None = typer.Option(None, help="Save a resumable checkpoint every N steps."),
    lora_targets: str | None = typer.Option(
        None,
        help="Comma-separated module names for LoRA, e.g. q_proj,v_proj (default: peft's for the model).",
    ),
    gradient_checkpointing: bool | None = typer.Option(
        None,
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Trade compute for activation memory.",
    ),
    trust_remote_code: bool | None = typer.Option(
        None, "--trust-remote-code/--no-trust-remote-code", help="Run the model directory's own Python code."
    ),
    chat_template: bool | None = typer.Option(
        None,
        "--chat-template/--no-chat-template",
        help="Prompt through the tokenizer's chat template (default: when it has one).",
    ),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="Method hyper-parameter KEY=VALUE (repeatable; VALUE is read as YAML)."
    ),
    stop_holdout: str | None = typer.Option(
        None,
        help="Calibrated stopping: QA pairs or passages like the forget set that the model never saw. "
        "The run stops, and publishes the weights, where the forget set is as unfamiliar as these.",
    ),
    stop_every: int | None = typer.Option(None, help="Calibrated stopping: steps between checks."),
    stop_score: str | None = typer.Option(
        None,
        help="Calibrated stopping: nll, min_k or accuracy (teacher-forced next-token accuracy: for "
        "verbatim memorised texts, docs/stopping.md).",
    ),
    stop_verbatim: bool | None = typer.Option(
        None,
        "--stop-verbatim/--no-stop-verbatim",
        help="Calibrated stopping: also wait until greedy continuations of forget prompts repeat "
        "their text no further than the holdout's (docs/stopping.md).",
    ),
    stop_verbatim_first: bool | None = typer.Option(
        None,
        "--stop-verbatim-first/--no-stop-verbatim-first",
        help="Calibrated stopping with --stop-verbatim: go on past an overshoot until the verbatim "
        "check holds (or the guard fails); may over-forget (docs/stopping.md).",
    ),
    threads: int = typer.Option(
        1,
        min=1,
        help="torch CPU threads (default 1, as `unmem run`: two threads on two shared cores ran "
        "unlearning ~10x slower; raise it on cores of your own).",
    ),
    overwrite: bool = typer.Option(
        False, help="Replace an existing output directory (only one unmem wrote; never an input)."
    ),
    restart: bool = typer.Option(
        False, help="Discard checkpoints of an interrupted run in OUT.work and start afresh."
    ),
) -> None:
    """Unlearn a forget set (QA pairs, or texts cut into windows) from a model with one method.

    Resuming: with --checkpoint-every N, an interrupted run (Ctrl-C, kill, crash) keeps
    checkpoints in OUT.work; the same command resumes from the last one. A run with other
    inputs or settings refuses to start there until you pass --restart.
    """
    from unmem.config import build_config, load_yaml, parse_scalar
    from unmem.evaluation.orchestrator import torch_threads
    from unmem.recipes import load_recipe, merge_settings
    from unmem.train import unlearn

    values = load_yaml(config) if config else {}
    chosen = method or values.get("method")
    if recipe is not None:
        if not chosen:
            raise UnmemError("--recipe needs a method: pass --method NAME or set `method:` in --config")
        values = merge_settings(load_recipe(recipe).settings(chosen), values)
    flags = {
        "method": method,
        "lora": lora,
        "lr": lr,
        "epochs": epochs,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "seed": seed,
        "device": device,
        "precision": precision,
        "reference": reference,
        "checkpoint_every": checkpoint_every,
        "lora_targets": [t.strip() for t in lora_targets.split(",") if t.strip()] if lora_targets else None,
        "gradient_checkpointing": gradient_checkpointing,
        "trust_remote_code": trust_remote_code,
        "chat_template": chat_template,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    stop_flags = {
        "holdout": stop_holdout,
        "every": stop_every,
        "score": stop_score,
        "verbatim": stop_verbatim,
        "verbatim_first": stop_verbatim_first,
    }
    if any(v is not None for v in stop_flags.values()):
        calibrated = dict(values.get("calibrated_stop") or {})
        calibrated.update({k: v for k, v in stop_flags.items() if v is not None})
        values["calibrated_stop"] = calibrated
    method_args = values.get("method_args") or {}
    if not isinstance(method_args, dict):
        where = config or "command line"
        raise UnmemError(f"{where}: field 'method_args' must be a mapping of KEY: VALUE, got {method_args!r}")
    for item in param:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UnmemError(f"--param '{item}': expected KEY=VALUE")
        method_args[key] = parse_scalar(raw)
    values["method_args"] = method_args
    if "method" not in values:
        raise UnmemError("no method given: pass --method NAME or set `method:` in --config")
    resolved = build_config(values, source=config or "command line")
    with torch_threads(threads):
        path = unlearn(
            model, forget, out, resolved, retain_path=retain, overwrite=overwrite, resume=not restart
        )
    print(path)


@app.command("world")
@user_errors
def world_cmd(
    out: str = typer.Option(..., help="Directory to create (must not exist unless --overwrite)."),
    preset: str = typer.Option("default", help="micro (tests), default or tofu."),
    seed: int = typer.Option(0, help="The same seed and options give byte-identical files."),
    entities: int | None = typer.Option(None, help="Trained entities (default: the preset's)."),
    facts_per_entity: int | None = typer.Option(None, help="Facts per entity (default: the preset's)."),
    overwrite: bool = typer.Option(False, help="Replace an existing world directory."),
) -> None:
    """Generate the offline benchmark world: fictitious people, their facts, QA, bios and text."""
    from unmem.data.world import WorldConfig, generate_world

    overrides = {"entities": entities, "facts_per_entity": facts_per_entity}
    given = {key: value for key, value in overrides.items() if value is not None}
    config = WorldConfig.from_preset(preset, seed=seed, **given)
    path = generate_world(config, out, overwrite=overwrite)
    print(path)
    sizes = config.forget_sizes()
    console.print(
        f"world: {config.entities} trained + {max(sizes.values())} holdout entities, "
        f"{config.facts_per_entity} facts each; forget splits "
        + ", ".join(f"forget{pct:02d} ({n})" for pct, n in sizes.items())
        + f"; the base model's corpus: {config.base_people} other people, {config.strangers} strangers",
        highlight=False,
        soft_wrap=True,
    )


@app.command("licenses")
@user_errors
def licenses_cmd(
    out: str = typer.Option(..., help="Directory to create: a `texts` benchmark directory."),
    licenses_dir: str = typer.Option(
        "/usr/share/common-licenses", help="Where the GPL, LGPL, Apache, CC0 and BSD license texts are."
    ),
    overwrite: bool = typer.Option(False, help="Replace an existing output directory (one unmem wrote)."),
) -> None:
    """Build the `texts` example from this machine's license texts: forget the MIT and BSD licenses
    SmolLM2 memorised, keep the GPL/Apache notices, hold out unmemorised license texts."""
    from unmem.data.licenses import build_license_texts

    print(build_license_texts(out, licenses_dir=licenses_dir, overwrite=overwrite))


def _one_progress_display() -> None:
    """An experiment shows its own stage progress; the per-model "Loading weights" bars of
    transformers (read once, when it is imported; worker processes inherit it) would interleave
    with it. Set HF_HUB_DISABLE_PROGRESS_BARS=0 to keep them."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@app.command("run")
@user_errors
def run_cmd(
    config: str = typer.Argument(..., help="Experiment YAML (see `unmem demo --show`)."),
    out: str | None = typer.Option(None, help="Experiment directory (default: runs/<name>)."),
    overwrite: bool = typer.Option(
        False,
        help="Redo the stages whose inputs changed since the last run in OUT (an edited file); "
        "without it such a change is an error naming it.",
    ),
) -> None:
    """Run an experiment file: world, models, every method × grid × seed, evaluation, report.

    Everything is validated first; an interrupted run (Ctrl-C, kill -9) resumes when the same
    command is re-run. While it runs, OUT.lock names its owner and a second run there fails.
    """
    _one_progress_display()
    from unmem.experiment import load_experiment, run_experiment

    report = run_experiment(load_experiment(config), out, overwrite=overwrite, console=console)
    print(report / "report.html")


@app.command("demo")
@user_errors
def demo_cmd(
    out: str = typer.Option("runs/demo", help="Experiment directory."),
    overwrite: bool = typer.Option(False, help="Redo the stages whose inputs changed since the last run."),
    show: bool = typer.Option(False, "--show", help="Print the demo's experiment file and exit."),
) -> None:
    """Forget forget10 of the default world with small models and nine methods, then report."""
    _one_progress_display()
    from unmem.experiment import load_experiment, run_experiment, shipped_config

    path = shipped_config("demo")
    if show:
        print(path.read_text(encoding="utf-8"), end="")
        return
    report = run_experiment(load_experiment(path), out, overwrite=overwrite, console=console)
    print(report / "report.html")


@app.command("report")
@user_errors
def report_cmd(
    run_dirs: list[str] = typer.Argument(..., help="Experiment directories (`unmem run --out`)."),
    out: str | None = typer.Option(
        None, help="Report directory (default: RUN_DIR/report); replaces only an earlier report."
    ),
) -> None:
    """Tables (CSV, Markdown) and a self-contained HTML report; several dirs are compared."""
    from unmem.report import build_report

    path = build_report(run_dirs, out)
    print(path / "report.html")


@app.command("eval")
@user_errors
def eval_cmd(
    model: str = typer.Option(..., help="Model directory, or an unmem run directory."),
    data: str = typer.Option(..., help="Benchmark data directory, laid out as --benchmark says."),
    out: str = typer.Option(..., help="Output directory: summary.json and per_sample/<family>.jsonl."),
    benchmark: str = typer.Option(
        "world", help="Data layout: world, tofu, muse (as published) or files (forget/retain/holdout)."
    ),
    split: str = typer.Option(
        "forget10",
        help="Forget split (forget01, forget05, forget10; world: requestsNN, its first NN requests).",
    ),
    retain_model: str | None = typer.Option(
        None, help="Retain model: forget quality and PrivLeak compare against it (cached)."
    ),
    retain_results: str | None = typer.Option(
        None, help="Or a previous `unmem eval --out` of the retain model (or its summary.json)."
    ),
    reference_model: str | None = typer.Option(None, help="Reference model for the reference MIA."),
    metrics: str | None = typer.Option(
        None,
        help="Comma-separated metric families, e.g. tofu,mia (default: every family the data supports "
        "but the robustness audit, which runs when named; a wrong name lists the known ones).",
    ),
    lm_eval_tasks: str | None = typer.Option(None, help="Directory of lm-eval task YAMLs (lm_eval family)."),
    trust_remote_code: bool = typer.Option(
        False,
        "--trust-remote-code",
        help="Run Python that is not unmem's: the model's own code, or what --lm-eval-tasks files "
        "name with !function.",
    ),
    retain_cache: str | None = typer.Option(
        None,
        help="Where the retain model's numbers are cached (default: OUT/retain_cache); "
        "one folder can serve every evaluation against the same retain model.",
    ),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
    dtype: str = typer.Option("auto", help="auto, float32, bfloat16 or float16."),
    batch_size: int = typer.Option(32, help="Scoring and generation batch size."),
    max_samples: int | None = typer.Option(None, help="Cap every evaluation set (quick looks)."),
    overwrite: bool = typer.Option(
        False,
        help="Recompute every family, ignoring cached results (in an earlier `unmem eval` output only).",
    ),
    threads: int | None = typer.Option(
        None, help="torch CPU threads (default: torch's; 1 is fastest for small models on busy cores)."
    ),
    convention: str = typer.Option(
        "unmem",
        help="unmem, or open-unlearning: TOFU's reference evaluator's token sequences and generation "
        "(docs/conventions.md).",
    ),
    attacks: str | None = typer.Option(
        None, help="Robustness audit: comma-separated attacks (default: all; docs/robustness.md)."
    ),
    relearn_epochs: int | None = typer.Option(
        None, help="Robustness audit: the relearning budget, in epochs (default 1)."
    ),
    relearn_lr: float | None = typer.Option(
        None, help="Robustness audit: the relearning rate, constant (default 1e-3, for the world's models)."
    ),
) -> None:
    """Evaluate a model: TOFU, MUSE, MIA, extraction and utility metrics, and with --metrics
    robustness the robustness audit (cached per family).

    Re-running resumes: families already in OUT/summary.json with the same inputs are reused.
    OUT may not be, hold or sit inside an input; while it runs, OUT.lock names its owner.
    """
    from unmem.evaluation import EvalOptions, evaluate, family_names, read_summary

    if retain_model and retain_results:
        raise UnmemError("pass either --retain-model or --retain-results, not both")
    families = [f.strip() for f in metrics.split(",") if f.strip()] if metrics else None
    audit: dict[str, Any] = {"relearn_epochs": relearn_epochs, "relearn_lr": relearn_lr}
    audit = {key: value for key, value in audit.items() if value is not None}
    if attacks:
        audit["robust_attacks"] = tuple(a.strip() for a in attacks.split(",") if a.strip())
    path = evaluate(
        model,
        benchmark=benchmark,
        data=data,
        split=split,
        out_dir=out,
        retain_model=retain_model,
        retain_results=retain_results,
        reference_model=reference_model,
        retain_cache_dir=retain_cache,
        overwrite=overwrite,
        metrics=families,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        max_samples=max_samples,
        lm_eval_tasks=lm_eval_tasks,
        trust_remote_code=trust_remote_code,
        threads=threads,
        options=EvalOptions(convention=convention, **audit),  # type: ignore[arg-type]
    )
    console.print(_eval_table(read_summary(path), family_names()))
    print(path / "summary.json")


def _eval_table(summary: EvalSummary, order: list[str]) -> Table:
    """Every metric of an evaluation summary, by family in report order (cached ones marked)."""
    table = Table("family", "metric", "value", title=f"unmem eval: {summary.model}")
    for family in sorted(summary.metric_ids, key=lambda f: order.index(f) if f in order else len(order)):
        cached = " (cached)" if summary.cached.get(family) else ""
        for i, name in enumerate(summary.metric_ids[family]):
            value = summary.metrics.get(name)
            shown = "-" if value is None else f"{value:.4g}"
            table.add_row(family + cached if i == 0 else "", name, shown)
    return table


model_app = typer.Typer(no_args_is_help=True, help="Bring outside models into unmem (GGUF import).")
app.add_typer(model_app, name="model")


@model_app.command("import-gguf")
@user_errors
def import_gguf_cmd(
    gguf_file: str = typer.Argument(
        ..., help="A llama.cpp .gguf checkpoint (e.g. SmolLM2-135M-Instruct.Q4_1.gguf)."
    ),
    out: str = typer.Option(..., help="Hugging Face model directory to create (safetensors + tokenizer)."),
    dtype: str = typer.Option(
        "float32", help="Saved weight type: float32 (exact) or bfloat16 (half the size)."
    ),
    overwrite: bool = typer.Option(False, help="Replace an existing output directory."),
) -> None:
    """De-quantise a GGUF file into a model directory that every unmem command accepts."""
    from unmem.gguf import import_gguf

    result = import_gguf(gguf_file, out, dtype=dtype, overwrite=overwrite)
    pad = f"pad token {result.pad_token!r}" + (
        " (the GGUF had none: set to <|endoftext|> if present, else eos)" if result.pad_token_added else ""
    )
    console.print(
        f"imported {result.model_type}, {result.parameters / 1e6:.1f}M parameters, {dtype}; {pad}; "
        f"chat template: {'yes' if result.chat_template else 'no'}",
        highlight=False,
        soft_wrap=True,
    )
    print(result.path)


@app.command("finetune")
@user_errors
def finetune_cmd(
    model: str = typer.Option(..., help="Pretrained model directory (Hugging Face layout); never modified."),
    data: list[str] = typer.Option(
        ..., help="JSONL/JSON of question/answer pairs or `text` passages (repeatable)."
    ),
    out: str = typer.Option(..., help="Output model directory (must not exist unless --overwrite)."),
    config: str | None = typer.Option(None, help="YAML with any FinetuneConfig fields."),
    lora: bool | None = typer.Option(
        None, "--lora/--full", help="Train a LoRA adapter instead of all weights."
    ),
    merge: bool | None = typer.Option(
        None, "--merge/--no-merge", help="With --lora: merge the adapter into the saved weights (default)."
    ),
    lora_targets: str | None = typer.Option(None, help="Comma-separated module names for LoRA."),
    lr: float | None = typer.Option(None, help="Learning rate (LoRA ~1e-3, full ~1e-5)."),
    epochs: int | None = typer.Option(None),
    batch_size: int | None = typer.Option(None),
    grad_accum: int | None = typer.Option(None),
    seed: int | None = typer.Option(None),
    device: str | None = typer.Option(None, help="auto, cpu or cuda."),
    precision: str | None = typer.Option(None, help="fp32 or bf16."),
    gradient_checkpointing: bool | None = typer.Option(
        None, "--gradient-checkpointing/--no-gradient-checkpointing", help="Trade compute for memory."
    ),
    trust_remote_code: bool | None = typer.Option(None, "--trust-remote-code/--no-trust-remote-code"),
    checkpoint_every: int | None = typer.Option(None, help="Save a resumable checkpoint every N steps."),
    overwrite: bool = typer.Option(
        False, help="Replace an existing output directory (only one unmem wrote; never an input)."
    ),
    restart: bool = typer.Option(
        False, help="Discard checkpoints of an interrupted run in OUT.work and start afresh."
    ),
) -> None:
    """Fine-tune a pretrained model on QA pairs or passages (make a target or retain model to unlearn).

    Resuming works as for `unmem unlearn` (--checkpoint-every N; --restart starts afresh).
    """
    from unmem.config import load_yaml
    from unmem.train.finetune import build_finetune_config, finetune

    values = load_yaml(config) if config else {}
    flags = {
        "lora": lora,
        "merge": merge,
        "lora_targets": [t.strip() for t in lora_targets.split(",") if t.strip()] if lora_targets else None,
        "lr": lr,
        "epochs": epochs,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "seed": seed,
        "device": device,
        "precision": precision,
        "gradient_checkpointing": gradient_checkpointing,
        "trust_remote_code": trust_remote_code,
        "checkpoint_every": checkpoint_every,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    print(finetune(model, data, out, build_finetune_config(values), overwrite=overwrite, resume=not restart))


store_app = typer.Typer(
    no_args_is_help=True, help="A versioned model store for deletion requests: ledger, receipts, rollback."
)
app.add_typer(store_app, name="store")


@store_app.command("init")
@user_errors
def store_init_cmd(
    model: str = typer.Option(..., help="The model to start from (Hugging Face directory); never modified."),
    out: str = typer.Option(..., help="The store to create (a new or empty folder)."),
    reference: bool = typer.Option(
        False,
        "--reference",
        help="Keep the model where it is, pinned by its files' hashes, instead of copying it.",
    ),
) -> None:
    """Start a store: version 0 is MODEL, and the ledger's first entry records it."""
    from unmem.store import init_store

    store = init_store(model, out, reference=reference)
    print(store.root)


@store_app.command("log")
@user_errors
def store_log_cmd(store: str = typer.Argument(..., help="The store.")) -> None:
    """The ledger: one line per entry (requests, their outcome and evidence, rollbacks)."""
    from unmem.store import log_rows

    rows = [
        {k: "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v) for k, v in row.items()}
        for row in log_rows(store)
    ]
    widths = {key: max(len(key), *(len(row[key]) for row in rows)) for key in rows[0]}
    for row in [dict(zip(widths, widths, strict=True)), *rows]:  # plain lines: a narrow terminal cuts none
        print("  ".join(row[key].ljust(width) for key, width in widths.items()).rstrip())


@store_app.command("show")
@user_errors
def store_show_cmd(
    store: str = typer.Argument(..., help="The store."),
    version: str | None = typer.Argument(None, help="Version number (default: the current one)."),
) -> None:
    """What a version is, the ledger entry that made it, its checks and receipt."""
    import json

    from unmem.store import show

    print(json.dumps(show(store, version), indent=2))


@store_app.command("export")
@user_errors
def store_export_cmd(
    store: str = typer.Argument(..., help="The store."),
    version: str = typer.Argument(..., help="Version number."),
    out: str = typer.Option(..., help="Directory to write (a plain Hugging Face model directory)."),
    overwrite: bool = typer.Option(False, help="Replace an earlier export (only a directory unmem wrote)."),
) -> None:
    """Write a version out as a model directory that transformers loads (EUL layers: over base/)."""
    from unmem.store import export

    print(export(store, version, out, overwrite=overwrite))


@store_app.command("rollback")
@user_errors
def store_rollback_cmd(
    store: str = typer.Argument(..., help="The store."),
    version: str = typer.Argument(..., help="The version to make current again."),
) -> None:
    """Make an earlier version current; the ledger records it, nothing is deleted."""
    from unmem.store import rollback

    entry = rollback(store, version)
    console.print(
        f"version {entry['version_after']} is current (ledger entry {entry['seq']})", highlight=False
    )


@store_app.command("verify")
@user_errors
def store_verify_cmd(
    store: str = typer.Argument(..., help="The store."),
    receipt: list[str] = typer.Option(
        [], help="Also check this receipt.json against the ledger (repeatable)."
    ),
) -> None:
    """Recompute the ledger's hash chain, the versions' file hashes and receipts; name the first mismatch."""
    from unmem.store import verify

    report = verify(store, receipt)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    if report.notes:
        return
    console.print(
        f"store verified: {report.entries} ledger entries chained, {report.versions} versions and "
        f"{report.receipts} receipts match; current version {report.current}; head {report.head}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("forget")
@user_errors
def forget_cmd(
    store: str = typer.Argument(..., help="The store (`unmem store init`)."),
    request: str | None = typer.Option(None, help="Request file (YAML: docs/requests.md)."),
    forget: str | None = typer.Option(None, help="Or: the records to forget (question/answer file)."),
    method: str | None = typer.Option(None, help="Method id (`unmem methods`)."),
    recipe: str | None = typer.Option(None, help="Start from a recipe's settings (`unmem recipes`)."),
    retain: str | None = typer.Option(None, help="Records to keep (methods with a retain term)."),
    holdout: str | None = typer.Option(
        None, help="Never-seen records like the forget ones: stopping and evidence."
    ),
    retain_model: str | None = typer.Option(
        None, help="A model never trained on the records: forget quality."
    ),
    request_id: str | None = typer.Option(None, "--id", help="The request's id (default: from its content)."),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="Method hyper-parameter KEY=VALUE (repeatable)."
    ),
    force: bool = typer.Option(False, help="Add the version even if an acceptance check fails (recorded)."),
) -> None:
    """Honour a deletion request: unlearn from the current version, evaluate, and add a version if
    the request's checks pass; the ledger and a receipt record it either way."""
    from unmem.config import parse_scalar
    from unmem.store import forget as forget_request
    from unmem.store import load_request, request_from_flags

    flags: dict[str, Any] = {
        "forget": forget, "method": method, "recipe": recipe, "retain": retain, "holdout": holdout,
        "retain_model": retain_model, "id": request_id,
    }  # fmt: skip
    if param:
        args = {}
        for item in param:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise UnmemError(f"--param '{item}': expected KEY=VALUE")
            args[key] = parse_scalar(raw)
        flags["settings"] = {"method_args": args}
    if request is not None:
        resolved = load_request(request, flags)
    elif forget is None:
        raise UnmemError("give the request: --request REQ.yaml, or --forget FILE --method NAME")
    else:
        resolved = request_from_flags(flags)
    outcome = forget_request(
        store, resolved, force=force, log=lambda line: console.print(line, highlight=False)
    )
    console.print(outcome.message, highlight=False, soft_wrap=True)
    if outcome.receipt is not None:
        print(outcome.receipt)
    if outcome.outcome == "refused":
        sys.exit(1)
