"""Issue 10: choosing a grid point without the retain model, measured against the oracle's choice."""

from __future__ import annotations

import math

import pytest

from unmem.selection import Candidate, oracle_choice, retain_free_choice, select


def _point(name: str, auc: float | None, utility: float, fq: float | None = None) -> Candidate:
    return Candidate(
        name, {"lr": name}, {"mia_loss_auc": auc, "model_utility": utility, "forget_quality": fq}
    )


def test_within_the_band_the_most_useful_point_wins():
    points = [
        _point("a", 0.90, 0.60),
        _point("b", 0.53, 0.55),
        _point("c", 0.48, 0.58),
        _point("d", 0.30, 0.61),
    ]
    chosen, why = retain_free_choice(points, band=0.05)
    assert chosen.variant == "c" and "2 of 4 points" in why


def test_outside_the_band_the_closest_auc_wins():
    chosen, why = retain_free_choice([_point("a", 0.9, 0.6), _point("b", 0.7, 0.5), _point("c", 0.2, 0.6)])
    assert chosen.variant == "b" and "closest" in why


def test_oracle_and_shortfall():
    points = [_point("a", 0.9, 0.6, 1e-6), _point("b", 0.52, 0.55, 0.02), _point("c", 0.6, 0.58, 0.3)]
    assert oracle_choice(points).variant == "c"
    selection = select("npo", points)
    assert selection.chosen.variant == "b"
    assert selection.shortfall == pytest.approx(15.0)  # Bound: approx's default on float64 arithmetic
    assert select("npo", [_point("a", 0.5, 0.6, None)]).shortfall is None
    assert math.isinf(select("npo", [_point("a", 0.5, 0.6, 0.0), _point("b", 0.9, 0.6, 0.1)]).shortfall)


def test_nan_metrics_count_as_missing():
    chosen, _ = retain_free_choice([_point("a", float("nan"), 0.6), _point("b", 0.8, 0.5)])
    assert chosen.variant == "b"
