"""Relative L2 by the papers' convention (the evaluated set's own range), against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from training.evaluate import summarize
from training.metrics import per_class_relative_l2, relative_l2, relative_l2_test_range


def test_relative_l2_uses_the_test_sets_own_range() -> None:
    # true 60, 70, 90: range 30; errors 3, -2, -9
    expected = ((3 / 30) ** 2 + (2 / 30) ** 2 + (9 / 30) ** 2) / 3
    assert relative_l2_test_range([63.0, 68.0, 81.0], [60.0, 70.0, 90.0]) == pytest.approx(expected)
    # the figure over a label range 0-104.5 is another, smaller number
    assert relative_l2([63.0, 68.0, 81.0], [60.0, 70.0, 90.0], 0.0, 104.5) == pytest.approx(
        ((3 / 104.5) ** 2 + (2 / 104.5) ** 2 + (9 / 104.5) ** 2) / 3)
    assert math.isnan(relative_l2_test_range([1.0, 2.0], [5.0, 5.0]))


def test_per_class_relative_l2_takes_each_classs_range() -> None:
    """AQA-7: every class is scored against its own test range (CoRe trains and tests one class at a time)."""
    predicted = [10.0, 20.0, 32.0, 50.0, 55.0, 70.0]
    true = [10.0, 22.0, 30.0, 40.0, 60.0, 80.0]
    classes = ["diving", "diving", "diving", "gym_vault", "gym_vault", "gym_vault"]
    per_class = per_class_relative_l2(predicted, true, classes)
    assert per_class["diving"] == pytest.approx((0 + (2 / 20) ** 2 + (2 / 20) ** 2) / 3)
    assert per_class["gym_vault"] == pytest.approx(((10 / 40) ** 2 + (5 / 40) ** 2 + (10 / 40) ** 2) / 3)


def test_evaluation_reports_the_papers_convention_for_final_and_execution() -> None:
    rows = [{"true_final": t, "pred_final": p, "difficulty": d, "difficulty_used": d, "action_class": None,
             "interval_low": 0.0, "interval_high": 200.0} for t, p, d in
            ((60.0, 63.0, 3.0), (70.0, 68.0, 2.0), (90.0, 81.0, 3.0))]
    evaluation = summarize(rows, score_range=(0.0, 104.5))
    final = evaluation.final
    assert final["relative_l2_x100"] == pytest.approx(100 * ((3 / 30) ** 2 + (2 / 30) ** 2 + (9 / 30) ** 2) / 3)
    assert final["relative_l2_x100_label_range"] == pytest.approx(
        100 * ((3 / 104.5) ** 2 + (2 / 104.5) ** 2 + (9 / 104.5) ** 2) / 3)
    # execution: true 20, 35, 30 (range 15), predicted 21, 34, 27
    execution = evaluation.execution
    assert execution is not None
    assert execution["relative_l2_x100"] == pytest.approx(100 * ((1 / 15) ** 2 + (1 / 15) ** 2 + (3 / 15) ** 2) / 3)
    assert execution["relative_l2_x100_label_range"] == pytest.approx(
        100 * ((1 / 30) ** 2 + (1 / 30) ** 2 + (3 / 30) ** 2) / 3)
