"""A bridge to lm-evaluation-harness: accuracy numbers of tasks defined in local YAML files
(``lm_eval_tasks``). Selected by default only when task files are given."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from unmem.errors import UnmemError, input_error
from unmem.evaluation.options import EvalConfig
from unmem.evaluation.registry import EvalInputs, FamilyContext, FamilyResult, register_family
from unmem.evaluation.session import num
from unmem.io import hash_files, json_safe, read_text


def read_task_files(tasks_dir: Path) -> tuple[list[str], list[str]]:
    """Task (and group) names defined by the YAML files under ``tasks_dir``, and where those
    files name Python for lm-eval to import (``!function utils.process_docs``), as "file:line"."""
    import yaml

    tags: list[tuple[int, str]] = []  # (line, function) of the file being read

    class _Loader(yaml.SafeLoader):
        pass

    def tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> None:
        if suffix == "function":
            tags.append((node.start_mark.line + 1, str(getattr(node, "value", ""))))

    # Every tag reads as null here: only lm-eval resolves them (importing Python for !function).
    _Loader.add_multi_constructor("!", tagged)
    python: list[str] = []
    names: list[str] = []
    for path in sorted(tasks_dir.rglob("*.yaml")):
        tags.clear()
        try:
            doc = yaml.load(read_text(path), Loader=_Loader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            raise input_error(
                path, f"invalid YAML ({getattr(exc, 'problem', None) or exc})", line=line
            ) from None
        python += [f"{path}:{line} (!function {function})" for line, function in tags]
        if not isinstance(doc, dict):
            continue
        if isinstance(doc.get("task"), str):
            names.append(doc["task"])
        elif isinstance(doc.get("group"), str):
            names.append(doc["group"])
    return list(dict.fromkeys(names)), python


def lm_eval_task_names(tasks_dir: Path) -> list[str]:
    """Task (and group) names defined by the YAML files under ``tasks_dir``."""
    return read_task_files(tasks_dir)[0]


def check_settings(config: EvalConfig) -> None:
    """Task files that exist, lm-eval installed, and trust for the Python the files name."""
    tasks_dir = config.lm_eval_tasks
    if tasks_dir is None:
        return
    if not tasks_dir.is_dir():
        raise UnmemError(f"{tasks_dir}: --lm-eval-tasks directory not found")
    if importlib.util.find_spec("lm_eval") is None:
        raise UnmemError(
            "metric family lm_eval needs the lm-evaluation-harness: pip install lm-eval "
            "(or drop lm_eval from --metrics)"
        )
    names, python = read_task_files(tasks_dir)
    if python and not config.trust_remote_code:
        raise UnmemError(
            f"{python[0]}: the lm-eval task imports Python from its folder; pass --trust-remote-code "
            "(in an experiment file: eval: {trust_remote_code: true}) if you trust it"
        )
    if not names:
        raise UnmemError(f"{tasks_dir}: no lm-eval task YAML (a file with a `task:` name) found")


def check(inputs: EvalInputs) -> None:
    if inputs.config.lm_eval_tasks is None:
        raise UnmemError(
            "metric family lm_eval needs --lm-eval-tasks DIR (lm-eval task YAMLs on local files)"
        )
    check_settings(inputs.config)


def run(ctx: FamilyContext) -> FamilyResult:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tasks_dir = ctx.inputs.config.lm_eval_tasks
    if tasks_dir is None:  # `check` stops this before any model loads
        raise UnmemError("metric family lm_eval needs --lm-eval-tasks DIR")
    names = lm_eval_task_names(tasks_dir)
    session = ctx.session
    output = lm_eval.simple_evaluate(
        model=HFLM(pretrained=session.model, tokenizer=session.tokenizer, batch_size=session.batch_size),
        tasks=names,
        task_manager=TaskManager(include_path=str(tasks_dir)),
    )
    results = (output or {}).get("results", {})
    metrics: dict[str, float | None] = {}
    for task, values in results.items():
        for key, value in values.items():
            metric, _, _ = key.partition(",")
            if metric in ("acc", "acc_norm", "exact_match") and isinstance(value, int | float):
                metrics[f"lm_eval_{task}_{metric}"] = num(value)
    return FamilyResult(metrics, {"tasks": names, "results": json_safe(results)})


def supports(inputs: EvalInputs) -> bool:
    return inputs.config.lm_eval_tasks is not None


def cache_inputs(inputs: EvalInputs) -> Any:
    tasks_dir = inputs.config.lm_eval_tasks
    return hash_files(sorted(Path(tasks_dir).rglob("*.yaml"))) if tasks_dir is not None else None


register_family(
    "lm_eval",
    run,
    ids=(),  # lm_eval_<task>_{acc,acc_norm,exact_match}: named by the task files
    supports=supports,
    description="lm-evaluation-harness tasks from local YAMLs (--lm-eval-tasks)",
    check=check,
    check_settings=check_settings,
    cache_inputs=cache_inputs,
    order=90,
)
