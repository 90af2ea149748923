"""Registry of metric families: name -> what it computes, which data it needs, how it runs.

A family is one file in ``unmem/evaluation/families/`` that calls :func:`register_family`
at import time; the package imports every file in it, so adding a family is adding one
file (docs/extending.md). The orchestrator (``evaluate``), the CLI table and the report
read everything they need from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unmem.data.benchmarks import EvalData
from unmem.errors import UnmemError
from unmem.evaluation.options import EvalConfig
from unmem.evaluation.session import ModelSession


@dataclass
class FamilyResult:
    """What a family returns: flat metrics (stable ids; None = not computed), extra numbers,
    one row per scored sample, and why a metric is None where that is not obvious."""

    metrics: dict[str, float | None]
    details: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalInputs:
    """What is known before any model loads: the data, the settings, the extra models given."""

    data: EvalData
    config: EvalConfig
    reference_model: Path | None = None  # a model for the reference-based MIA


@dataclass(frozen=True)
class RetainReference:
    """A family's numbers of the retain model (the gold standard it compares against)."""

    source: str  # the retain model directory, or the `unmem eval --out` they were read from
    values: dict[str, Any]


@dataclass(frozen=True)
class FamilyContext:
    """What a family's ``run`` gets."""

    session: ModelSession
    inputs: EvalInputs
    reference: RetainReference | None  # this family's retain numbers (families with ``retain`` hooks)


@dataclass(frozen=True)
class RetainHooks:
    """How a family gets the retain model's numbers: from the retain model itself, or from a
    previous ``unmem eval --out`` of it (None when that output lacks them)."""

    from_model: Callable[[ModelSession], dict[str, Any]]
    from_results: Callable[[Path, EvalData], dict[str, Any] | None]


@dataclass(frozen=True)
class FamilySpec:
    name: str
    run: Callable[[FamilyContext], FamilyResult]
    ids: tuple[str, ...]  # metric ids it reports (with the default options)
    supports: Callable[[EvalInputs], bool]  # does the data / do the settings allow it? (default selection)
    description: str
    headline: tuple[str, ...] = ()  # report columns shown first, in this order
    retain: RetainHooks | None = None  # set when the family compares against a retain model
    check: Callable[[EvalInputs], None] | None = None  # raises UnmemError when it cannot run at all
    # The part of ``check`` that needs only the settings: experiments call it when the file is read
    check_settings: Callable[[EvalConfig], None] | None = None
    cache_inputs: Callable[[EvalInputs], Any] | None = None  # extra inputs of its cache key
    order: int = 100  # position in tables and reports; the built-in families come first
    default: bool = True  # False: runs only when named (--metrics), e.g. a costly audit
    # Bump when the family's formulas or the metrics it reports change: only its cached results
    # are recomputed (EVAL_VERSION invalidates every family's).
    version: int = 1


_FAMILIES: dict[str, FamilySpec] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def register_family(
    name: str,
    run: Callable[[FamilyContext], FamilyResult],
    *,
    ids: Sequence[str],
    supports: Callable[[EvalInputs], bool],
    description: str,
    **options: Any,
) -> FamilySpec:
    """Register a metric family; rejects malformed and duplicate names so two files cannot collide."""
    if not _NAME.match(name):
        raise ValueError(f"family name {name!r} must be lower_snake_case (src/unmem/evaluation/families/)")
    if name in _FAMILIES:
        raise ValueError(
            f"metric family {name!r} is registered twice; rename one of the files in "
            "src/unmem/evaluation/families/"
        )
    spec = FamilySpec(name, run, tuple(ids), supports, description, **options)
    _FAMILIES[name] = spec
    return spec


def all_families() -> dict[str, FamilySpec]:
    """Every registered family, in report order."""
    from unmem.evaluation import families  # noqa: F401  (imports every family module)

    return dict(sorted(_FAMILIES.items(), key=lambda item: (item[1].order, item[0])))


def family_names() -> list[str]:
    return list(all_families())


def get_family(name: str) -> FamilySpec:
    known = all_families()
    if name not in known:
        raise UnmemError(f"unknown metric family '{name}'; known: {', '.join(known)}")
    return known[name]


def headline_metrics() -> list[str]:
    """The metric ids reports show first: each family's headline, in family order."""
    return [metric for spec in all_families().values() for metric in spec.headline]


def resolve_families(requested: Sequence[str] | None, inputs: EvalInputs) -> list[str]:
    """The families to run: ``requested`` (checked) or every default family the inputs support."""
    known = all_families()
    if not requested:
        names = [name for name, spec in known.items() if spec.default and spec.supports(inputs)]
    else:
        names = list(dict.fromkeys(requested))
        for name in names:
            get_family(name)
    for name in names:
        spec = known[name]
        if spec.check is not None:
            spec.check(inputs)
        if not spec.supports(inputs):
            raise UnmemError(
                f"metric family '{name}' needs data that the {inputs.data.benchmark} layout at "
                f"{inputs.data.root} does not provide; drop it from --metrics"
            )
    return names
