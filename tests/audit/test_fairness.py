import importlib.util

import numpy as np
import pytest

from veil.audit.fairness import equalized_odds_difference, group_accuracy, worst_group_gap
from veil.errors import ConfigError

# Two sites, three classes; worked by hand in the comments below.
Y_TRUE = np.array([0, 0, 1, 1, 2, 2, 0, 1, 1, 2])
Y_PRED = np.array([0, 1, 1, 1, 2, 0, 0, 1, 0, 2])
SITES = np.array(["a", "a", "a", "a", "a", "a", "b", "b", "b", "b"])


def test_group_accuracy_by_hand():
    # site a: rows 0-5, correct 0, 2, 3, 4 → 4/6; site b: rows 6-9, correct 6, 7, 9 → 3/4.
    assert group_accuracy(Y_TRUE, Y_PRED, SITES) == {"a": pytest.approx(4 / 6), "b": 0.75}
    # by class: class 0 rows 0, 1, 6 → 2/3; class 1 rows 2, 3, 7, 8 → 3/4; class 2 rows 4, 5, 9
    # → 2/3. Keys are plain Python values.
    by_class = group_accuracy(Y_TRUE, Y_PRED, Y_TRUE)
    assert by_class == {0: pytest.approx(2 / 3), 1: 0.75, 2: pytest.approx(2 / 3)}
    assert all(type(k) is int for k in by_class)


def test_worst_group_gap_by_hand():
    assert worst_group_gap(Y_TRUE, Y_PRED, SITES) == pytest.approx(0.75 - 4 / 6)
    assert worst_group_gap(Y_TRUE, Y_PRED, np.zeros(10)) == 0.0


def test_equalized_odds_difference_by_hand():
    # One-vs-rest rates per site (TPR = P(ŷ=k | y=k), FPR = P(ŷ=k | y≠k)):
    #   class 0: TPR a 1/2, b 1/1 → 0.5;  FPR a 1/4 (row 5), b 1/3 (row 8) → 1/12
    #   class 1: TPR a 2/2, b 1/2 → 0.5;  FPR a 1/4 (row 1), b 0/2 → 0.25
    #   class 2: TPR a 1/2, b 1/1 → 0.5;  FPR a 0/4, b 0/3 → 0
    assert equalized_odds_difference(Y_TRUE, Y_PRED, SITES) == pytest.approx(0.5)


def test_equalized_odds_difference_skips_rates_a_group_does_not_define():
    # Site b has no class-1 row, so only site a defines TPR for class 1 (no gap from it); the
    # FPR of class 1 is 0 at a (row 0 → 0) and 1/2 at b (row 3 → 1): the difference is 0.5.
    y_true = np.array([0, 1, 0, 0])
    y_pred = np.array([0, 1, 1, 0])
    sites = np.array([0, 0, 1, 1])
    assert equalized_odds_difference(y_true, y_pred, sites) == pytest.approx(0.5)


def test_perfect_predictions_are_fair():
    assert equalized_odds_difference(Y_TRUE, Y_TRUE, SITES) == 0.0
    assert worst_group_gap(Y_TRUE, Y_TRUE, SITES) == 0.0


@pytest.mark.skipif(importlib.util.find_spec("fairlearn") is None, reason="fairlearn not installed")
def test_binary_equalized_odds_matches_fairlearn():
    from fairlearn.metrics import equalized_odds_difference as fairlearn_eod

    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 2, 500), rng.integers(0, 2, 500)
    groups = rng.integers(0, 4, 500)
    expected = fairlearn_eod(y_true, y_pred, sensitive_features=groups)
    assert equalized_odds_difference(y_true, y_pred, groups) == pytest.approx(expected)


def test_binary_equalized_odds_is_the_larger_of_the_tpr_and_fpr_gaps():
    # The independent definition fairlearn uses for binary labels (positive class 1).
    rng = np.random.default_rng(1)
    y_true, y_pred, groups = (rng.integers(0, n, 300) for n in (2, 2, 3))
    tpr = [np.mean(y_pred[(groups == g) & (y_true == 1)]) for g in range(3)]
    fpr = [np.mean(y_pred[(groups == g) & (y_true == 0)]) for g in range(3)]
    expected = max(max(tpr) - min(tpr), max(fpr) - min(fpr))
    assert equalized_odds_difference(y_true, y_pred, groups) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "groups", "message"),
    [
        ([0, 1], [0], [0, 0], "must have one entry per row"),
        ([[0, 1]], [[0, 1]], [[0, 0]], "y_true must be a 1-d array"),
        ([], [], [], "need at least one row"),
    ],
)
def test_metrics_refuse_bad_input(y_true, y_pred, groups, message):
    for metric in (group_accuracy, worst_group_gap, equalized_odds_difference):
        with pytest.raises(ConfigError, match=message):
            metric(np.array(y_true), np.array(y_pred), np.array(groups))
