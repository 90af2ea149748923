"""Retain-free calibrated stopping: the rule on hand-made check sequences, its scores, the loop.

Float bounds: `chosen.auc == 0.53` is exact (the rule returns one of the checks it was given);
other bounds say why where they are used.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from unmem.config import CalibratedStop
from unmem.train.stopping import (
    Check,
    calibrated_decision,
    familiarity,
    membership_auc,
    select_check,
)

BAND, GUARD = 0.05, 1.1
RULE = CalibratedStop(band=BAND, max_utility_ratio=GUARD)
VERBATIM_FIRST = CalibratedStop(band=BAND, max_utility_ratio=GUARD, verbatim=True, verbatim_first=True)


def _checks(aucs: list[float], ratios: list[float] | None = None) -> list[Check]:
    ratios = ratios or [1.0] * len(aucs)
    return [
        Check(step * 5, auc, 0.5, ratio) for step, (auc, ratio) in enumerate(zip(aucs, ratios, strict=True))
    ]


def _run(aucs: list[float], ratios: list[float] | None = None) -> tuple[int, str | None, Check]:
    """Feed checks one by one as the loop does; (index stopped at, reason, selected check)."""
    history = _checks(aucs, ratios)
    for index, check in enumerate(history):
        reason = calibrated_decision(check, RULE)
        if reason is not None and index > 0:
            return index, reason, select_check(history[: index + 1], GUARD)
    return len(history) - 1, None, select_check(history, GUARD)


def test_stops_at_the_crossing_into_the_band():
    index, reason, chosen = _run([1.0, 0.9, 0.74, 0.53, 0.50, 0.48])
    assert index == 3 and "as unfamiliar as holdout" in reason
    assert chosen.auc == 0.53  # closest to 0.5 of what was seen


def test_overshoot_is_detected_and_the_point_before_it_kept():
    # 0.60 -> 0.30 jumps over the band: stop at 0.30, publish 0.60 (|0.1| < |0.2|).
    index, reason, chosen = _run([1.0, 0.8, 0.60, 0.30, 0.2])
    assert index == 3 and reason.startswith("overshoot")
    assert chosen.auc == 0.60 and chosen.step == 10


def test_tie_goes_to_the_earlier_point():
    _, reason, chosen = _run([1.0, 0.58, 0.42])
    assert reason.startswith("overshoot") and chosen.auc == 0.58


def test_utility_guard_stops_and_excludes_points_past_it():
    index, reason, chosen = _run([1.0, 0.8, 0.6, 0.5], [1.0, 1.02, 1.2, 1.3])
    assert index == 2 and reason.startswith("utility guard")
    assert chosen.auc == 0.8  # 0.6 broke the guard


def test_no_crossing_runs_to_the_end_and_keeps_the_closest():
    index, reason, chosen = _run([1.0, 0.95, 0.9, 0.85])
    assert reason is None and index == 3 and chosen.auc == 0.85


def test_step_zero_is_selected_when_nothing_helps():
    assert select_check(_checks([0.9, 0.95, 1.0]), GUARD).step == 0


def test_membership_auc_is_the_probability_a_member_scores_higher():
    members, nonmembers = np.array([3.0, 4.0]), np.array([1.0, 2.0, 3.5])
    auc, p_value = membership_auc(members, nonmembers)
    # Bound: approx's default; an AUC is a count of pairs over 6, exact but for the division.
    assert auc == pytest.approx(5 / 6)  # pairs won: 3>1,3>2,4>1,4>2,4>3.5 = 5 of 6
    assert 0 < p_value <= 1
    assert membership_auc(nonmembers, members)[0] == pytest.approx(1 / 6)


def test_familiarity_scores():
    rows = [np.array([-1.0, -2.0, -3.0]), np.array([-0.5])]
    # Bound: assert_allclose's default (relative 1e-7): means of small integers and halves, exact in float.
    np.testing.assert_allclose(familiarity(rows, "nll"), [-2.0, -0.5])
    # Min-40% of 3 tokens takes ceil(1.2) = 2 lowest: mean(-3, -2) = -2.5
    np.testing.assert_allclose(familiarity(rows, "min_k"), [-2.5, -0.5])
    # Accuracy: the share of tokens ranked first, 2 of 3 and 0 of 1.
    hits = [np.array([True, False, True]), np.array([False])]
    np.testing.assert_allclose(familiarity(rows, "accuracy", hits), [2 / 3, 0.0])
    with pytest.raises(ValueError, match="needs the per-token hits"):
        familiarity(rows, "accuracy")


def test_token_scores_are_the_labels_log_probs_and_argmax_hits(tiny_model, tiny_tokenizer):
    from unmem.data.collate import Example
    from unmem.train.stopping import token_scores_of

    example = Example(input_ids=[5, 6, 7, 8], labels=[-100, 6, 7, 8])
    [(logps, hits)] = token_scores_of(tiny_model, [example], tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        logits = tiny_model(input_ids=torch.tensor([[5, 6, 7, 8]])).logits[0, :-1]
    # Bound: float32 log-softmax of the same logits by two routes (chunked lean path vs torch).
    np.testing.assert_allclose(logps, torch.log_softmax(logits, -1)[[0, 1, 2], [6, 7, 8]].numpy(), rtol=1e-5)
    np.testing.assert_array_equal(hits, (logits.argmax(-1) == torch.tensor([6, 7, 8])).numpy())


def test_calibrated_stop_config_rejects_bad_values(tmp_path):
    from unmem.config import build_config
    from unmem.errors import UnmemError

    with pytest.raises(UnmemError, match=r"calibrated_stop\.band"):
        build_config({"method": "ga", "calibrated_stop": {"holdout": str(tmp_path), "band": 0.7}})
    with pytest.raises(UnmemError, match=r"calibrated_stop\.every"):
        build_config({"method": "ga", "calibrated_stop": {"holdout": str(tmp_path), "every": 0}})


def test_summary_names_the_chosen_step(tmp_path):
    from unmem.config import CalibratedStop
    from unmem.train.stopping import CalibratedStopping

    rule = CalibratedStopping(CalibratedStop(holdout=tmp_path), [], [], None, 0)
    rule.history = _checks([1.0, 0.7, 0.52])
    summary = rule.summary("forget set as unfamiliar as holdout")
    assert summary["selected_step"] == 10 and "AUC 0.520" in summary["why"]
    json.dumps(summary)  # goes into summary.json


def test_cli_sets_the_stop_score_and_verbatim_and_rejects_an_unknown_score(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from unmem.cli import app

    seen = []
    monkeypatch.setattr("unmem.train.unlearn", lambda model, forget, out, config, **kw: seen.append(config))
    args = ["unlearn", "--model", "m", "--method", "ga", "--forget", "f.jsonl", "--out", str(tmp_path / "o")]
    args += ["--stop-holdout", "h.jsonl"]
    assert CliRunner().invoke(app, [*args, "--stop-score", "accuracy"]).exit_code == 0
    assert seen[0].calibrated_stop.score == "accuracy" and not seen[0].calibrated_stop.verbatim
    assert CliRunner().invoke(app, [*args, "--stop-verbatim"]).exit_code == 0
    assert seen.pop().calibrated_stop.verbatim
    assert CliRunner().invoke(app, [*args, "--stop-verbatim", "--stop-verbatim-first"]).exit_code == 0
    assert seen.pop().calibrated_stop.verbatim_first
    alone = CliRunner().invoke(app, [*args, "--stop-verbatim-first"])
    assert alone.exit_code != 0 and "verbatim_first needs verbatim" in alone.output
    bad = CliRunner().invoke(app, [*args, "--stop-score", "rank"])
    assert bad.exit_code != 0 and "calibrated_stop.score" in bad.output and not seen[1:]


def test_a_start_already_in_the_band_is_a_warning(tmp_path):
    from unmem.config import CalibratedStop
    from unmem.errors import UnmemWarning
    from unmem.train.stopping import CalibratedStopping

    rule = CalibratedStopping(CalibratedStop(holdout=tmp_path, score="accuracy"), [], [], None, 0)
    rule._measure = lambda model, step: Check(step, 0.5, 1.0, 1.0)  # type: ignore[method-assign]
    with pytest.warns(UnmemWarning, match=r"AUC 0\.500 by score 'accuracy'"):
        rule.start(None, None)
    rule._measure = lambda model, step: Check(step, 0.9, 0.01, 1.0)  # type: ignore[method-assign]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rule.start(None, None)


def _verbatim(auc: float, forget_exact: float, holdout_exact: float = 0.5, step: int = 0) -> Check:
    return Check(step, auc, 0.5, 1.0, forget_exact, holdout_exact)


def test_verbatim_keeps_the_rule_going_inside_the_band_until_forget_repeats_no_further():
    assert calibrated_decision(_verbatim(0.52, 0.73), RULE) is None  # in the band, still longer
    reason = calibrated_decision(_verbatim(0.52, 0.5), RULE)
    assert reason is not None and "exact match 0.50 ≤ 0.50" in reason
    # Overshoot and the guard stop the run whatever the exact match.
    assert calibrated_decision(_verbatim(0.3, 0.73), RULE).startswith("overshoot")
    guarded = Check(0, 0.52, 0.5, 1.3, 0.73, 0.5)
    assert calibrated_decision(guarded, RULE).startswith("utility guard")


def test_verbatim_first_goes_on_past_the_overshoot_until_forget_repeats_no_further():
    # Still longer than holdout below the band: go on (without verbatim_first: stop).
    assert calibrated_decision(_verbatim(0.23, 0.64), VERBATIM_FIRST) is None
    assert calibrated_decision(_verbatim(0.23, 0.64), RULE).startswith("overshoot")
    reason = calibrated_decision(_verbatim(0.05, 0.27, 0.46), VERBATIM_FIRST)
    assert (
        reason
        == "overshoot: forget set less familiar than holdout (AUC 0.050 < 0.450, exact match 0.27 ≤ 0.46)"
    )
    # In the band the rule is unchanged; the guard still ends the run.
    assert calibrated_decision(_verbatim(0.52, 0.73), VERBATIM_FIRST) is None
    guarded = Check(0, 0.2, 0.5, 1.3, 0.73, 0.5)
    assert calibrated_decision(guarded, VERBATIM_FIRST).startswith("utility guard")


def test_verbatim_first_needs_verbatim(tmp_path):
    from pydantic import ValidationError

    from unmem.config import CalibratedStop

    with pytest.raises(ValidationError, match="verbatim_first needs verbatim: true"):
        CalibratedStop(holdout=tmp_path, verbatim_first=True)
    assert CalibratedStop(holdout=tmp_path, verbatim=True, verbatim_first=True).verbatim_first


def test_selection_prefers_checks_that_keep_verbatim_and_falls_back_to_the_auc():
    history = [_verbatim(1.0, 2.1, step=0), _verbatim(0.52, 0.73, step=5), _verbatim(0.43, 0.4, step=10)]
    assert select_check(history, GUARD).step == 10  # the only check not repeating further than holdout
    assert select_check(history[:2], GUARD).step == 5  # none keeps it: closest to 0.5, as without verbatim
    past_guard = [*history[:2], Check(10, 0.43, 0.5, 1.3, 0.4, 0.5)]
    assert select_check(past_guard, GUARD).step == 5  # the guard comes first


def test_exact_match_mean_counts_the_greedy_prefix_that_repeats_the_labels(tiny_model, tiny_tokenizer):
    from unmem.data.collate import Example
    from unmem.train.stopping import exact_match_mean

    prompt = [1, 5, 6]
    with torch.no_grad():
        greedy = tiny_model.generate(
            input_ids=torch.tensor([prompt]), max_new_tokens=3, do_sample=False, pad_token_id=0
        )[0, len(prompt) :].tolist()
    wrong = (greedy[2] + 1) % tiny_model.config.vocab_size  # not what the model continues with
    two = [*greedy[:2], wrong, greedy[0]]  # repeats 2 tokens, then departs
    none = [(greedy[0] + 1) % tiny_model.config.vocab_size, *greedy[1:]]  # departs at once
    examples = [
        Example(prompt + two, [-100] * 3 + two),
        Example(prompt + none, [-100] * 3 + none),
        Example(prompt, [-100] * 3),  # nothing to repeat: not counted
    ]
    assert exact_match_mean(tiny_model, examples, tiny_tokenizer.pad_token_id) == 1.0  # (2 + 0) / 2
    with pytest.raises(ValueError, match="a prompt and labelled tokens"):
        exact_match_mean(tiny_model, [Example([5, 6], [5, 6])], tiny_tokenizer.pad_token_id)


def test_summary_says_whether_the_chosen_step_kept_verbatim(tmp_path):
    from unmem.config import CalibratedStop
    from unmem.train.stopping import CalibratedStopping

    rule = CalibratedStopping(CalibratedStop(holdout=tmp_path, verbatim=True), [], [], None, 0)
    rule.history = [_verbatim(1.0, 2.0, step=0), _verbatim(0.55, 0.9, step=5)]
    assert (
        "exact match 0.90 tokens, still longer than (no check kept it) holdout's 0.50"
        in rule.summary("")["why"]
    )
    rule.history.append(_verbatim(0.45, 0.5, step=10))
    summary = rule.summary("")
    assert summary["selected_step"] == 10 and "0.50 tokens, no longer than holdout's 0.50" in summary["why"]
