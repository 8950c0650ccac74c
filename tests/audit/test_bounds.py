import math

import numpy as np
import pytest
from dp_accounting import dp_event
from scipy.stats import binom

from veil.audit.bounds import (
    clopper_pearson_lower,
    clopper_pearson_upper,
    epsilon_lower_bound,
)
from veil.errors import ConfigError
from veil.privacy.accounting import epsilon


def test_clopper_pearson_closed_forms_at_the_edges():
    # k = 0: P[Binomial(n, p) = 0] = (1 - p)^n = 1 - confidence.
    assert clopper_pearson_upper(0, 10, 0.95) == pytest.approx(1 - 0.05 ** (1 / 10), rel=1e-12)
    # k = n: P[Binomial(n, p) = n] = p^n = 1 - confidence.
    assert clopper_pearson_lower(10, 10, 0.95) == pytest.approx(0.05 ** (1 / 10), rel=1e-12)
    assert clopper_pearson_upper(7, 7, 0.95) == 1.0
    assert clopper_pearson_lower(0, 7, 0.95) == 0.0


def test_clopper_pearson_textbook_interval():
    # The two-sided 95% exact interval for 5 of 10 is (0.1871, 0.8129) (Clopper & Pearson 1934
    # tables; e.g. R's binom.test(5, 10)): each side is a one-sided 97.5% bound.
    assert clopper_pearson_lower(5, 10, 0.975) == pytest.approx(0.18709, abs=1e-5)
    assert clopper_pearson_upper(5, 10, 0.975) == pytest.approx(0.81291, abs=1e-5)


@pytest.mark.parametrize(("k", "n"), [(0, 1), (3, 50), (17, 40), (999, 1000)])
def test_clopper_pearson_bounds_solve_the_binomial_tail_equations(k, n):
    upper = clopper_pearson_upper(k, n, 0.9)
    assert binom.cdf(k, n, upper) == pytest.approx(0.1, abs=1e-9)
    if k > 0:
        lower = clopper_pearson_lower(k, n, 0.9)
        assert binom.sf(k - 1, n, lower) == pytest.approx(0.1, abs=1e-9)
        assert lower < k / n < upper


@pytest.mark.parametrize(
    ("k", "n", "confidence", "message"),
    [
        (3, 2, 0.95, r"k must be in \[0, n=2\]"),
        (-1, 5, 0.95, r"k must be in"),
        (1, 0, 0.95, "n must be >= 1"),
        (1.5, 4, 0.95, "k must be an integer"),
        (1, 4, 1.0, r"confidence must be in \(0, 1\)"),
        (1, 4, 0, r"confidence must be in \(0, 1\)"),
    ],
)
def test_clopper_pearson_refuses_bad_input(k, n, confidence, message):
    with pytest.raises(ConfigError, match=message):
        clopper_pearson_upper(k, n, confidence)
    with pytest.raises(ConfigError, match=message):
        clopper_pearson_lower(k, n, confidence)


def test_identical_distributions_give_no_evidence():
    rng = np.random.default_rng(0)
    bound = epsilon_lower_bound(rng.normal(size=4000), rng.normal(size=4000), 1e-5)
    assert bound.epsilon < 0.2


def test_separated_scores_give_a_bound_limited_by_the_number_of_runs():
    # Perfect separation: no false positive or negative, so only the run count limits ε: the
    # bound is log((1 - δ - u) / u) with u the Clopper–Pearson bound on 0 errors in n/2 runs.
    n = 2000
    bound = epsilon_lower_bound(np.full(n, 5.0), np.zeros(n), 1e-5, 0.95)
    u = 1 - (0.025) ** (1 / (n // 2))
    assert bound.fpr == bound.fnr == 0
    assert bound.fpr_upper == pytest.approx(u)
    assert bound.epsilon == pytest.approx(math.log((1 - 1e-5 - u) / u))
    assert bound.num_in == bound.num_out == n // 2


def test_gaussian_shift_bound_is_below_the_true_epsilon_and_close_with_many_runs():
    # N(1, 1) vs N(0, 1) is the Gaussian mechanism with σ = 1: no test can show more than its ε.
    # The empirical bound must stay below it and reach a good part of it.
    true_epsilon = epsilon(dp_event.GaussianDpEvent(1.0), 1e-5)
    rng = np.random.default_rng(1)
    bound = epsilon_lower_bound(rng.normal(1.0, 1, 100_000), rng.normal(0, 1, 100_000), 1e-5)
    assert 0.3 * true_epsilon < bound.epsilon < true_epsilon
    assert bound.inequality in ("tpr", "tnr")


def test_lower_scores_for_the_canary_are_not_evidence():
    # Higher scores mean "in": a statistic pointing the wrong way gives nothing.
    rng = np.random.default_rng(2)
    bound = epsilon_lower_bound(rng.normal(-3, 1, 4000), rng.normal(0, 1, 4000), 1e-5)
    assert bound.epsilon == 0.0


def test_the_split_does_not_depend_on_the_order_of_the_scores():
    rng = np.random.default_rng(3)
    scores_in, scores_out = rng.normal(2, 1, 3000), rng.normal(0, 1, 3000)
    shuffled = epsilon_lower_bound(scores_in, scores_out, 1e-5)
    ordered = epsilon_lower_bound(np.sort(scores_in), np.sort(scores_out), 1e-5)
    assert ordered.epsilon == pytest.approx(shuffled.epsilon, abs=0.5)
    assert 0.5 * shuffled.epsilon < ordered.epsilon  # sorted halves would not be i.i.d.


def test_bound_to_json_names_the_test():
    bound = epsilon_lower_bound(np.arange(10.0) + 5, np.arange(10.0), 1e-3)
    data = bound.to_json()
    assert set(data) >= {"epsilon", "threshold", "fpr_upper", "fnr_upper", "delta", "confidence"}


@pytest.mark.parametrize(
    ("scores_in", "delta", "confidence", "message"),
    [
        (np.ones(3), 1e-5, 0.95, "scores_in needs at least 4 runs"),
        (np.ones((4, 2)), 1e-5, 0.95, "scores_in must be a 1-d array"),
        (np.array([1.0, 2.0, np.nan, 3.0]), 1e-5, 0.95, "scores_in must be finite"),
        (np.ones(8), 0.0, 0.95, r"delta must be in \(0, 1\)"),
        (np.ones(8), 1e-5, 1.5, r"confidence must be in \(0, 1\)"),
    ],
)
def test_epsilon_lower_bound_refuses_bad_input(scores_in, delta, confidence, message):
    with pytest.raises(ConfigError, match=message):
        epsilon_lower_bound(scores_in, np.zeros(8), delta, confidence)
