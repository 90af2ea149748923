"""The robustness audit's attacks: what one is, what it returns, and their registry.

An attack takes the evaluation's loaded model and data (a ``ModelSession``) and returns what
to score instead: a changed *copy* of the model (relearning, quantization), rewritten
questions (prompting), or answers sampled instead of greedy. It never changes the session's
model. The ``robustness`` family (``unmem.evaluation.families.robustness``) scores every
attack's result with the same forget metrics, for the audited model and the retain model.

An attack is one file in this package that calls :func:`register_attack` at import time
(the package imports every file in it), like a metric family: docs/extending.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from unmem.data.benchmarks import EvalData
from unmem.errors import UnmemError
from unmem.evaluation.options import EvalOptions
from unmem.evaluation.session import ModelSession

# relearn: fine-tunes a copy (robustness R against the retain model); quantize: rounds a copy's
# weights (robustness Q); prompt: rewrites the questions; sample: k answers at temperature 1.
Kind = Literal["relearn", "quantize", "prompt", "sample"]
KINDS: tuple[str, ...] = ("relearn", "quantize", "prompt", "sample")


@dataclass
class Attacked:
    """What an attack hands back for scoring."""

    model: torch.nn.Module  # a changed copy, or the session's own model (prompting, sampling)
    data: EvalData  # the sets to score: forget cut to the scored records, questions rewritten
    scored: list[int]  # indices of the original forget records that ``data.qa["forget"]`` holds
    samples: int = 0  # > 0: answers are this many samples at temperature 1 instead of one greedy
    info: dict[str, Any] = field(default_factory=dict)  # budget and cost: steps, seconds, final loss


@dataclass(frozen=True)
class AttackSpec:
    name: str
    kind: Kind
    apply: Callable[[ModelSession], Attacked]
    description: str
    # Why this data (with these options) cannot take the attack; None when it can.
    missing: Callable[[EvalData, EvalOptions], str | None]


_ATTACKS: dict[str, AttackSpec] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _always(data: EvalData, opts: EvalOptions) -> str | None:
    return None


def register_attack(
    name: str,
    apply: Callable[[ModelSession], Attacked],
    *,
    kind: Kind,
    description: str,
    missing: Callable[[EvalData, EvalOptions], str | None] = _always,
) -> AttackSpec:
    """Register an attack; malformed and duplicate names are refused so two files cannot collide."""
    if not _NAME.match(name):
        raise ValueError(f"attack name {name!r} must be lower_snake_case (src/unmem/evaluation/attacks/)")
    if kind not in KINDS:
        raise ValueError(f"attack {name!r}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if name in _ATTACKS:
        raise ValueError(
            f"attack {name!r} is registered twice; rename one of the files in src/unmem/evaluation/attacks/"
        )
    spec = AttackSpec(name, kind, apply, description, missing)
    _ATTACKS[name] = spec
    return spec


def all_attacks() -> dict[str, AttackSpec]:
    """Every registered attack, by kind (relearn, quantize, prompt, sample), then as registered."""
    from unmem.evaluation import attacks  # noqa: F401  (imports every attack module)

    return dict(sorted(_ATTACKS.items(), key=lambda item: KINDS.index(item[1].kind)))


def selected_attacks(opts: EvalOptions) -> list[AttackSpec]:
    """The attacks ``opts.robust_attacks`` names (None: all of them), checked."""
    known = all_attacks()
    names = list(known) if opts.robust_attacks is None else list(dict.fromkeys(opts.robust_attacks))
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UnmemError(f"unknown attack '{unknown[0]}' in robust_attacks; known: {', '.join(known)}")
    return [known[name] for name in names]


def with_sets(data: EvalData, **sets: list[dict[str, Any]]) -> EvalData:
    """A copy of ``data`` whose QA sets named in ``sets`` are replaced (the others are shared)."""
    return replace(data, qa=data.qa | sets)
