"""A bridge to lm-evaluation-harness: accuracy numbers of tasks defined in local YAML files
(``lm_eval_tasks``). Selected by default only when task files are given."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from unmem.errors import UnmemError, input_error
from unmem.evaluation.registry import EvalInputs, FamilyContext, FamilyResult, register_family
from unmem.evaluation.session import num
from unmem.io import hash_files, json_safe


def lm_eval_task_names(tasks_dir: Path) -> list[str]:
    """Task (and group) names defined by the YAML files under ``tasks_dir``."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    # lm-eval YAMLs use tags such as ``!function utils.process_docs``: read them as null.
    _Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    names: list[str] = []
    for path in sorted(tasks_dir.rglob("*.yaml")):
        try:
            doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
        except yaml.YAMLError as exc:
            raise input_error(path, f"invalid YAML: {exc}") from None
        if not isinstance(doc, dict):
            continue
        if isinstance(doc.get("task"), str):
            names.append(doc["task"])
        elif isinstance(doc.get("group"), str):
            names.append(doc["group"])
    return list(dict.fromkeys(names))


def check(inputs: EvalInputs) -> None:
    tasks_dir = inputs.config.lm_eval_tasks
    if tasks_dir is None:
        raise UnmemError(
            "metric family lm_eval needs --lm-eval-tasks DIR (lm-eval task YAMLs on local files)"
        )
    if not tasks_dir.is_dir():
        raise UnmemError(f"{tasks_dir}: --lm-eval-tasks directory not found")
    if importlib.util.find_spec("lm_eval") is None:
        raise UnmemError(
            "metric family lm_eval needs the lm-evaluation-harness: pip install lm-eval "
            "(or drop lm_eval from --metrics)"
        )
    if not lm_eval_task_names(tasks_dir):
        raise UnmemError(f"{tasks_dir}: no lm-eval task YAML (a file with a `task:` name) found")


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
    cache_inputs=cache_inputs,
    order=90,
)
