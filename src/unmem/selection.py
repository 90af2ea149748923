"""Choosing a grid point without a retain model, and measuring that choice against the oracle.

A sweep (an experiment entry with a grid over the learning rate and a method's key
hyper-parameters) gives several unlearned models of one method. A user without a retain
model picks among them with what they can measure (:func:`retain_free_choice`):

1. the forget set should look like never-seen data: the LOSS membership AUC of forget vs
   holdout (``mia_loss_auc``; 0.5 = indistinguishable, as for the retain model) within
   ``0.5 ± band``;
2. among those, the point that kept the most model utility (``model_utility``);
3. if none is within the band, the point whose AUC is closest to 0.5.

With a retain model (the benchmark), the *oracle* picks the point with the best forget
quality, and the report puts the two side by side: how much forget quality the
retain-free choice gives up is the measured cost of not having a retain model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_BAND = 0.05
AUC = "mia_loss_auc"
UTILITY = "model_utility"
FORGET_QUALITY = "forget_quality"


@dataclass(frozen=True)
class Candidate:
    """One grid point of a sweep, its metrics averaged over seeds."""

    variant: str
    grid: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)

    def get(self, name: str) -> float | None:
        value = self.metrics.get(name)
        return value if value is not None and math.isfinite(value) else None

    @property
    def distance(self) -> float:
        """|AUC − 0.5|; infinite without an AUC."""
        auc = self.get(AUC)
        return math.inf if auc is None else abs(auc - 0.5)


def retain_free_choice(candidates: Sequence[Candidate], band: float = DEFAULT_BAND) -> tuple[Candidate, str]:
    """The point a user without a retain model would pick, and why (see the module docstring)."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    within = [c for c in candidates if c.distance <= band]
    if within:
        chosen = max(within, key=lambda c: (c.get(UTILITY) or -math.inf, -c.distance))
        return chosen, (
            f"AUC {chosen.get(AUC):.3f} within 0.5 ± {band} ({len(within)} of {len(candidates)} points), "
            f"highest model utility {chosen.get(UTILITY) or float('nan'):.3f}"
        )
    chosen = min(candidates, key=lambda c: c.distance)
    if chosen.get(AUC) is None:
        return chosen, "no point has a membership AUC; the first is shown"
    return chosen, f"no point within 0.5 ± {band}; AUC {chosen.get(AUC):.3f} is the closest"


def oracle_choice(candidates: Sequence[Candidate]) -> Candidate | None:
    """The point with the best forget quality (needs the retain model); None without it."""
    scored = [c for c in candidates if c.get(FORGET_QUALITY) is not None]
    return max(scored, key=lambda c: c.get(FORGET_QUALITY) or 0.0) if scored else None


@dataclass(frozen=True)
class Selection:
    """A sweep's retain-free choice next to the oracle's."""

    sweep: str
    chosen: Candidate
    why: str
    oracle: Candidate | None

    @property
    def shortfall(self) -> float | None:
        """Oracle forget quality / the choice's (1 = the rule found the best point)."""
        if self.oracle is None:
            return None
        best, got = self.oracle.get(FORGET_QUALITY), self.chosen.get(FORGET_QUALITY)
        if best is None or got is None:
            return None
        return math.inf if got == 0 else best / got


def select(sweep: str, candidates: Sequence[Candidate], band: float = DEFAULT_BAND) -> Selection:
    chosen, why = retain_free_choice(candidates, band)
    return Selection(sweep, chosen, why, oracle_choice(candidates))
