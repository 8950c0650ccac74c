import json
import math
import time
from pathlib import Path

import pytest
from dp_accounting import dp_event
from scipy import optimize, special

from veil.errors import ConfigError
from veil.privacy.accounting import (
    ACCOUNTANTS,
    NEIGHBORING,
    calibrate_noise_multiplier,
    compose,
    dpsgd_epsilon,
    dpsgd_event,
    epsilon,
    fixed_size_event,
)

TABLE = json.loads((Path(__file__).parent / "reference_epsilons.json").read_text())
ROWS = TABLE["rows"]
MNIST = (1.1, 256 / 60000, 14000, 1e-5)  # σ, q, T, δ of the 14,000-step case


def row_id(row: dict) -> str:
    return f"s{row['noise_multiplier']}-q{row['sample_rate']:.3g}-T{row['steps']}-d{row['delta']}"


def args(row: dict) -> tuple[float, float, int, float]:
    return row["noise_multiplier"], row["sample_rate"], row["steps"], row["delta"]


def analytic_gaussian_epsilon(std: float, delta: float) -> float:
    """Balle & Wang 2018: the ε with Φ(1/2s - εs) - e^ε Φ(-1/2s - εs) = δ (sensitivity 1)."""

    def excess(eps: float) -> float:
        first = special.ndtr(1 / (2 * std) - eps * std)
        second = math.exp(eps + special.log_ndtr(-1 / (2 * std) - eps * std))
        return first - second - delta

    return optimize.brentq(excess, 0.0, 1e4, xtol=1e-14, rtol=1e-14)


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_epsilon_agrees_with_the_reference_table_for_both_accountants(row):
    pld = dpsgd_epsilon(*args(row))
    rdp = dpsgd_epsilon(*args(row), accountant="rdp")
    assert pld == pytest.approx(row["pld_epsilon"], rel=0.01)
    assert rdp == pytest.approx(row["rdp_epsilon"], rel=0.01)
    assert rdp >= pld and row["rdp_epsilon"] >= row["pld_epsilon"]  # RDP is an upper bound


@pytest.mark.parametrize("row", [r for r in ROWS if r["sample_rate"] == 1.0], ids=row_id)
def test_pld_matches_the_analytic_gaussian_mechanism(row):
    sigma, _, steps, delta = args(row)
    analytic = analytic_gaussian_epsilon(sigma / math.sqrt(steps), delta)
    assert analytic == pytest.approx(row["analytic_epsilon"], rel=1e-9)
    assert dpsgd_epsilon(*args(row)) == pytest.approx(analytic, rel=0.01)
    single = dp_event.GaussianDpEvent(sigma / math.sqrt(steps))  # T-fold = one with σ/√T
    assert epsilon(single, delta) == pytest.approx(analytic, rel=0.01)


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_fourteen_thousand_steps_take_under_a_second(accountant):
    seconds = math.inf
    for _ in range(2):  # a second try only if a busy machine slowed the first
        start = time.perf_counter()
        dpsgd_epsilon(*MNIST, accountant=accountant)
        seconds = min(seconds, time.perf_counter() - start)
        if seconds <= 1.0:
            break
    assert seconds <= 1.0, f"{accountant}: {seconds:.2f} s"


def test_dpsgd_event_is_a_self_composed_poisson_gaussian():
    expected = dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(0.1, dp_event.GaussianDpEvent(1.2)), 20
    )
    assert dpsgd_event(1.2, 0.1, 20) == expected
    assert dpsgd_epsilon(1.2, 0.1, 20, 1e-5) == epsilon(expected, 1e-5)


def test_compose_groups_identical_events_and_flattens_compositions():
    a = dpsgd_event(1.0, 0.01, 10)
    b = dp_event.LaplaceDpEvent(2.0)
    events = [a, b, a, dp_event.SelfComposedDpEvent(a, 3), dp_event.ComposedDpEvent([b])]
    events.append(dp_event.NoOpDpEvent())
    assert compose(events) == dp_event.ComposedDpEvent(
        [dp_event.SelfComposedDpEvent(a.event, 50), dp_event.SelfComposedDpEvent(b, 2)]
    )
    assert compose([]) == dp_event.NoOpDpEvent()
    assert compose([a]) is a
    assert compose([b, a]) == dp_event.ComposedDpEvent([b, a])


def test_composing_thousands_of_releases_is_as_fast_as_one_event():
    step = dpsgd_event(1.0, 0.01, 1)
    start = time.perf_counter()
    eps = epsilon(compose([step] * 3000), 1e-5)
    assert time.perf_counter() - start < 2.0
    assert eps == pytest.approx(dpsgd_epsilon(1.0, 0.01, 3000, 1e-5), rel=1e-9)


def test_heterogeneous_composition_costs_more_than_each_part():
    sgd, laplace = dpsgd_event(1.0, 0.01, 100), dp_event.LaplaceDpEvent(10.0)
    both = epsilon(compose([sgd, laplace]), 1e-5)
    assert both > epsilon(sgd, 1e-5) and both > epsilon(laplace, 1e-5)
    assert both <= epsilon(sgd, 1e-5) + 0.1 + 1e-3  # basic composition bounds it


def test_no_op_is_free_and_non_private_is_infinite():
    assert epsilon(dp_event.NoOpDpEvent(), 1e-5) == 0
    for accountant in ACCOUNTANTS:
        assert epsilon(dp_event.NonPrivateDpEvent(), 1e-5, accountant) == math.inf


def test_fixed_size_sampling_is_accounted_by_rdp_under_replace_one():
    event = fixed_size_event(60000, 256, 1.1, 1000)
    assert event == dp_event.SelfComposedDpEvent(
        dp_event.SampledWithoutReplacementDpEvent(60000, 256, dp_event.GaussianDpEvent(1.1)), 1000
    )
    eps = epsilon(event, 1e-5, "rdp", "replace_one")
    assert 0 < eps < math.inf
    # Sampling everyone is the plain Gaussian, σ relative to the replace-one sensitivity.
    everyone = epsilon(fixed_size_event(100, 100, 2.0, 10), 1e-5, "rdp", "replace_one")
    plain = dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(2.0), 10)
    assert everyone == pytest.approx(epsilon(plain, 1e-5, "rdp"))
    with pytest.raises(ConfigError, match=r"use accountant='rdp', neighboring='replace_one'$"):
        epsilon(event, 1e-5, "pld", "replace_one")
    with pytest.raises(ConfigError, match=r"cannot account SelfComposedDpEvent/Sampled"):
        epsilon(event, 1e-5, "rdp", "add_remove")


def test_replace_one_gaussian_doubles_the_shift_in_pld_and_is_refused_by_rdp():
    gaussian = dp_event.GaussianDpEvent(1.0)
    half = dp_event.GaussianDpEvent(0.5)
    assert epsilon(gaussian, 1e-5, "pld", "replace_one") == pytest.approx(
        epsilon(half, 1e-5, "pld", "add_remove"), rel=1e-3
    )
    with pytest.raises(ConfigError, match=r"accountant 'rdp' under neighboring 'replace_one'"):
        epsilon(dp_event.SelfComposedDpEvent(gaussian, 3), 1e-5, "rdp", "replace_one")
    with pytest.raises(ConfigError, match=r"cannot account LaplaceDpEvent .*'add_remove'$"):
        epsilon(dp_event.LaplaceDpEvent(1.0), 1e-5, "pld", "replace_one")


@pytest.mark.parametrize(
    ("target", "q", "steps", "delta", "accountant", "rel_tol"),
    [
        (1.0, 1.0, 1, 1e-5, "pld", 1e-3),
        (2.0, 0.2, 20, 1e-5, "pld", 1e-3),
        (2.0, 1.0, 10, 1e-6, "pld", 0.05),
        (1.0, 1.0, 5, 1e-5, "rdp", 1e-3),
    ],
)
def test_calibrated_sigma_is_the_smallest_meeting_the_target(
    target, q, steps, delta, accountant, rel_tol
):
    sigma = calibrate_noise_multiplier(target, q, steps, delta, accountant, rel_tol)
    assert dpsgd_epsilon(sigma, q, steps, delta, accountant) <= target
    assert dpsgd_epsilon(sigma * (1 - rel_tol), q, steps, delta, accountant) > target


def test_calibration_refuses_unreachable_targets_and_says_why():
    unreachable = r"target epsilon 1e-05 is unreachable: noise multiplier 100000 still gives"
    with pytest.raises(ConfigError, match=unreachable):
        calibrate_noise_multiplier(1e-5, 1.0, 100, 1e-5, "rdp")
    with pytest.raises(ConfigError, match=r"target epsilon 500.0 is met by every noise multiplier"):
        calibrate_noise_multiplier(500.0, 1.0, 1, 1e-5, "rdp")
    with pytest.raises(ConfigError, match=r"delta >= sample rate gives epsilon 0"):
        calibrate_noise_multiplier(1.0, 1e-6, 1, 1e-5)


G = dp_event.GaussianDpEvent(1.0)
BAD_ARGUMENTS = [
    (dpsgd_epsilon, (0, 0.01, 10, 1e-5), r"noise multiplier must be > 0 \(got 0\)"),
    (dpsgd_epsilon, (-1.0, 0.01, 10, 1e-5), r"noise multiplier must be > 0 \(got -1.0\)"),
    (dpsgd_epsilon, (math.nan, 0.01, 10, 1e-5), r"noise multiplier must be > 0 \(got nan\)"),
    (dpsgd_epsilon, (math.inf, 0.01, 10, 1e-5), r"noise multiplier must be finite \(got inf\)"),
    (dpsgd_epsilon, ("1", 0.01, 10, 1e-5), r"noise multiplier must be a number > 0 \(got '1'\)"),
    (dpsgd_epsilon, (1.0, 0.0, 10, 1e-5), r"sample rate must be in \(0, 1\] \(got 0.0\)"),
    (dpsgd_epsilon, (1.0, 1.5, 10, 1e-5), r"sample rate must be in \(0, 1\] \(got 1.5\)"),
    (dpsgd_epsilon, (1.0, math.nan, 10, 1e-5), r"sample rate must be in \(0, 1\] \(got nan\)"),
    (dpsgd_epsilon, (1.0, None, 10, 1e-5), r"sample rate must be in \(0, 1\] \(got None\)"),
    (dpsgd_epsilon, (1.0, 0.01, 0, 1e-5), r"steps must be an integer >= 1 \(got 0\)"),
    (dpsgd_epsilon, (1.0, 0.01, 2.5, 1e-5), r"steps must be an integer >= 1 \(got 2.5\)"),
    (dpsgd_epsilon, (1.0, 0.01, True, 1e-5), r"steps must be an integer >= 1 \(got True\)"),
    (dpsgd_epsilon, (1.0, 0.01, 10, 0.0), r"delta must be in \(0, 1\) \(got 0.0\)"),
    (dpsgd_epsilon, (1.0, 0.01, 10, 1.0), r"delta must be in \(0, 1\) \(got 1.0\)"),
    (dpsgd_epsilon, (1.0, 0.01, 10, math.inf), r"delta must be in \(0, 1\) \(got inf\)"),
    (
        dpsgd_epsilon,
        (1.0, 0.01, 10, 1e-5, "moments"),
        r"accountant must be one of \['pld', 'rdp'\] \(got 'moments'\)",
    ),
    (
        epsilon,
        (G, 1e-5, "pld", "swap"),
        r"neighboring must be one of \['add_remove', 'replace_one'\] \(got 'swap'\)",
    ),
    (epsilon, (1.0, 1e-5), r"event must be a dp_accounting DpEvent \(got float\)"),
    (compose, ([G, "x"],), r"event must be a dp_accounting DpEvent \(got str\)"),
    (
        epsilon,
        (dp_event.UnsupportedDpEvent(), 1e-5),
        r"cannot account UnsupportedDpEvent under neighboring 'add_remove'; no accountant can",
    ),
    (fixed_size_event, (0, 1, 1.0, 1), r"population must be an integer >= 1 \(got 0\)"),
    (fixed_size_event, (10, 0, 1.0, 1), r"sample size must be an integer >= 1 \(got 0\)"),
    (fixed_size_event, (10, 11, 1.0, 1), r"sample size must be in \[1, population=10\] \(got 11\)"),
    (fixed_size_event, (10, 5, 0.0, 1), r"noise multiplier must be > 0 \(got 0.0\)"),
    (fixed_size_event, (10, 5, 1.0, 0), r"steps must be an integer >= 1 \(got 0\)"),
    (
        calibrate_noise_multiplier,
        (0.0, 0.01, 10, 1e-5),
        r"target epsilon must be > 0 and finite \(got 0.0\)",
    ),
    (
        calibrate_noise_multiplier,
        (math.nan, 0.01, 10, 1e-5),
        r"target epsilon must be > 0 and finite \(got nan\)",
    ),
    (
        calibrate_noise_multiplier,
        ("2", 0.01, 10, 1e-5),
        r"target epsilon must be a number > 0 \(got '2'\)",
    ),
    (
        calibrate_noise_multiplier,
        (1.0, 0.01, 10, 1e-5, "pld", 0),
        r"rel_tol must be in \(0, 1\) \(got 0\)",
    ),
    (
        calibrate_noise_multiplier,
        (1.0, 2.0, 10, 1e-5),
        r"sample rate must be in \(0, 1\] \(got 2.0\)",
    ),
    (
        calibrate_noise_multiplier,
        (1.0, 0.01, 10, 1e-5, "gdp"),
        r"accountant must be one of \['pld', 'rdp'\] \(got 'gdp'\)",
    ),
]


@pytest.mark.parametrize(("function", "arguments", "message"), BAD_ARGUMENTS)
def test_bad_arguments_are_refused_with_a_clear_message(function, arguments, message):
    with pytest.raises(ConfigError, match=message):
        function(*arguments)


def test_the_accountant_and_relation_names():
    assert ACCOUNTANTS == ("pld", "rdp")
    assert NEIGHBORING == ("add_remove", "replace_one")


def test_repeated_randomized_response_is_never_under_counted():
    """dp-accounting 0.6's PLD ignores the count of a self-composed RandomizedResponseDpEvent."""
    rr = dp_event.RandomizedResponseDpEvent(noise_parameter=0.5, num_buckets=4)
    once = epsilon(rr, 1e-6, neighboring="replace_one")
    for event in (compose([rr] * 3), dp_event.SelfComposedDpEvent(rr, 3)):
        for accountant in ACCOUNTANTS:
            thrice = epsilon(event, 1e-6, accountant, neighboring="replace_one")
            assert thrice == pytest.approx(3 * once, rel=0.02), accountant
