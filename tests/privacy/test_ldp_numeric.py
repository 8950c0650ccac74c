"""Local DP for bounded numbers: calibration, clipping, unbiased means, noise variance, events."""

from __future__ import annotations

import math

import pytest
import torch
from dp_accounting import dp_event
from dp_accounting.gaussian_mechanism import get_epsilon_gaussian
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant
from dp_accounting.privacy_accountant import NeighboringRelation

from veil.errors import ConfigError
from veil.privacy.ldp_numeric import (
    estimate_mean,
    gaussian_mean_variance,
    gaussian_randomize,
    gaussian_sigma,
    laplace_mean_variance,
    laplace_randomize,
    laplace_scale,
)
from veil.randomness import noise_generator

pytestmark = pytest.mark.filterwarnings("ignore::veil.randomness.InsecureNoiseWarning")

RANGE = {"lower": -1.0, "upper": 3.0}  # Δ = 4


def _generator(stream: int = 0) -> torch.Generator:
    return noise_generator(seed_for_testing=2012, stream=stream)


def test_laplace_scale_is_range_over_epsilon():
    assert laplace_scale(**RANGE, epsilon=2.0) == pytest.approx(2.0)
    assert laplace_mean_variance(100, **RANGE, epsilon=2.0) == pytest.approx(2 * 4 / 100)


def test_gaussian_sigma_is_the_analytic_gaussian_calibration():
    sigma = gaussian_sigma(**RANGE, epsilon=0.5, delta=1e-5)
    assert get_epsilon_gaussian(sigma / 4, 1e-5) == pytest.approx(0.5, rel=1e-6)
    # Tighter than the classic sqrt(2 ln(1.25/δ)) Δ / ε bound (Dwork and Roth, Thm A.1).
    assert sigma < 4 * math.sqrt(2 * math.log(1.25 / 1e-5)) / 0.5
    variance = gaussian_mean_variance(50, **RANGE, epsilon=0.5, delta=1e-5)
    assert variance == pytest.approx(sigma**2 / 50)


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_reports_are_unbiased_with_the_stated_noise_variance(mechanism):
    n = 400_000
    values = torch.linspace(-3.0, 5.0, n)  # a quarter clipped at each end
    clipped_mean = values.clamp(-1.0, 3.0).double().mean().item()
    if mechanism == "laplace":
        reports, _ = laplace_randomize(values, **RANGE, epsilon=1.0, generator=_generator())
        variance = laplace_mean_variance(n, **RANGE, epsilon=1.0)
    else:
        reports, _ = gaussian_randomize(
            values, **RANGE, epsilon=1.0, delta=1e-6, generator=_generator()
        )
        variance = gaussian_mean_variance(n, **RANGE, epsilon=1.0, delta=1e-6)
    assert reports.dtype == torch.float64 and reports.shape == (n,)
    assert abs(estimate_mean(reports) - clipped_mean) < 4 * math.sqrt(variance)
    noise = reports - values.clamp(-1.0, 3.0).double()
    assert noise.var().item() == pytest.approx(n * variance, rel=0.02)


def test_laplace_noise_has_laplace_tails():
    noise, _ = laplace_randomize(torch.zeros(200_000), **RANGE, epsilon=4.0, generator=_generator())
    # P[|Lap(b)| > t b] = e^-t.
    assert (noise.abs() > 2.0).double().mean().item() == pytest.approx(math.exp(-2), rel=0.05)


def test_values_are_clipped_before_the_noise():
    values = torch.tensor([-100.0, 0.5, 100.0])
    reports, _ = laplace_randomize(values, **RANGE, epsilon=100.0, generator=_generator())
    torch.testing.assert_close(reports, torch.tensor([-1.0, 0.5, 3.0]).double(), atol=0.5, rtol=0)


def test_events_give_epsilon():
    _, laplace = laplace_randomize(torch.zeros(2), **RANGE, epsilon=1.5, generator=_generator())
    assert laplace == dp_event.LaplaceDpEvent(1 / 1.5)
    accountant = PLDAccountant(NeighboringRelation.ADD_OR_REMOVE_ONE)
    accountant.compose(laplace)
    assert accountant.get_epsilon(1e-12) == pytest.approx(1.5, abs=1e-3)  # pure: ε at any δ

    _, gaussian = gaussian_randomize(
        torch.zeros(2), **RANGE, epsilon=1.5, delta=1e-6, generator=_generator()
    )
    assert gaussian.noise_multiplier == pytest.approx(
        gaussian_sigma(**RANGE, epsilon=1.5, delta=1e-6) / 4
    )
    accountant = PLDAccountant(NeighboringRelation.ADD_OR_REMOVE_ONE)
    accountant.compose(gaussian)
    assert accountant.get_epsilon(1e-6) == pytest.approx(1.5, rel=0.01)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: laplace_scale(lower=1.0, upper=1.0, epsilon=1.0),
            r"lower < upper \(got 1.0, 1.0\)",
        ),
        (lambda: laplace_scale(lower=0.0, upper=math.inf, epsilon=1.0), r"must be finite"),
        (
            lambda: laplace_scale(**RANGE, epsilon=0.0),
            r"epsilon must be in \(0, 100.0\] \(got 0.0\)",
        ),
        (lambda: gaussian_sigma(**RANGE, epsilon=-1.0, delta=1e-5), r"epsilon must be in \(0, 100"),
        (
            lambda: gaussian_sigma(**RANGE, epsilon=1.0, delta=0.0),
            r"delta must be in \(0, 1\) \(got 0.0\)",
        ),
        (
            lambda: gaussian_sigma(**RANGE, epsilon=1.0, delta=1.0),
            r"delta must be in \(0, 1\) \(got 1.0\)",
        ),
        (
            lambda: laplace_mean_variance(0, **RANGE, epsilon=1.0),
            r"num_users must be >= 1 \(got 0\)",
        ),
        (
            lambda: gaussian_mean_variance(0, **RANGE, epsilon=1.0, delta=1e-5),
            r"num_users must be >= 1 \(got 0\)",
        ),
        (lambda: estimate_mean(torch.zeros(0)), r"reports must be a non-empty 1-D tensor"),
        (lambda: estimate_mean(torch.zeros(2, 2)), r"reports must be a non-empty 1-D tensor"),
    ],
)
def test_bad_arguments_are_refused_by_name(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


@pytest.mark.parametrize("randomize", [laplace_randomize, gaussian_randomize])
def test_bad_values_are_refused_by_name(randomize):
    kwargs = {"epsilon": 1.0, "generator": _generator(), **RANGE}
    if randomize is gaussian_randomize:
        kwargs["delta"] = 1e-5
    with pytest.raises(
        ConfigError, match=r"values must be a 1-D floating-point tensor.*got torch.int64"
    ):
        randomize(torch.zeros(3, dtype=torch.int64), **kwargs)
    with pytest.raises(ConfigError, match=r"values must be a 1-D .* shape \(2, 2\)"):
        randomize(torch.zeros(2, 2), **kwargs)
    with pytest.raises(ConfigError, match=r"values must not contain NaN"):
        randomize(torch.tensor([0.0, math.nan]), **kwargs)
