"""Evaluate a model: metric families (one file each in ``families/``), run and cached per family.

Run: ``unmem eval --model runs/npo --benchmark world --data runs/world --split forget10
--retain-model runs/models/retain90 --out runs/eval/npo``; or from Python,
``evaluate("runs/npo", data="runs/world", out_dir="runs/eval/npo")``.

Modules: ``options`` (``EvalOptions``, ``EvalConfig``), ``registry`` (the families and
what each needs), ``session`` (the loaded model and its memoised scores), ``reference``
(the retain model's numbers), ``cache`` (model hashes, family cache keys),
``orchestrator`` (``evaluate``). Data comes from ``unmem.data.benchmarks``, model calls
from ``unmem.metrics.scoring``, formulas from the pure ``unmem.metrics`` modules. The
output layout: ``unmem.layout.EvalDir``; the summary's fields: ``unmem.results.EvalSummary``.
"""

from unmem.evaluation.options import EVAL_VERSION, EvalConfig, EvalOptions
from unmem.evaluation.orchestrator import evaluate, read_summary
from unmem.evaluation.registry import (
    EvalInputs,
    FamilyContext,
    FamilyResult,
    FamilySpec,
    RetainHooks,
    all_families,
    family_names,
    get_family,
    headline_metrics,
    register_family,
    resolve_families,
)

__all__ = [
    "EVAL_VERSION",
    "EvalConfig",
    "EvalInputs",
    "EvalOptions",
    "FamilyContext",
    "FamilyResult",
    "FamilySpec",
    "RetainHooks",
    "all_families",
    "evaluate",
    "family_names",
    "get_family",
    "headline_metrics",
    "read_summary",
    "register_family",
    "resolve_families",
]
