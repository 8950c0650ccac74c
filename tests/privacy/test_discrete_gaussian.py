import math
import time
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy import stats

from veil.errors import ConfigError
from veil.privacy import discrete_gaussian as dg
from veil.privacy.discrete_gaussian import (
    rational_variance,
    sample_discrete_gaussian,
    uniform_below,
)
from veil.randomness import InsecureNoiseWarning, noise_generator


def seeded(seed: int = 0, device: str = "cpu") -> torch.Generator:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        return noise_generator(seed_for_testing=seed, device=device)


def exact_pmf(sigma: float, support: np.ndarray) -> np.ndarray:
    """N_Z(0, σ²) on ``support`` (normalised over ±60σ, far beyond any mass that matters)."""
    everything = np.arange(-math.ceil(60 * sigma) - 10, math.ceil(60 * sigma) + 11)
    total = np.exp(-(everything.astype(float) ** 2) / (2 * sigma**2)).sum()
    return np.exp(-(support.astype(float) ** 2) / (2 * sigma**2)) / total


def exact_variance(sigma: float) -> float:
    """Σ k² e^{-k²/2σ²} / Σ e^{-k²/2σ²}: below σ² for small σ (σ = 0.5: 0.215, not 0.25)."""
    k = np.arange(-math.ceil(60 * sigma) - 10, math.ceil(60 * sigma) + 11)
    return float((k.astype(float) ** 2 * exact_pmf(sigma, k)).sum())


@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.1, 1.5, 3.0, 1000.0, 1e7])
def test_rational_variance_rounds_sigma_squared_up_by_at_most_2_to_the_minus_20(sigma):
    params = rational_variance(sigma)
    assert params.t == math.floor(sigma) + 1
    assert params.b & (params.b - 1) == 0  # a power of two
    assert params.d == 2 * params.t * params.c * params.b < 2**62
    target = Fraction(sigma) ** 2
    assert target <= params.variance <= target * (1 + Fraction(1, 2**20))


def test_pmf_matches_the_exact_pmf_by_chi_square():
    sigma, n = 1.5, 100_000
    draws = sample_discrete_gaussian(n, sigma, seeded(1)).numpy()
    inner = np.arange(-6, 7)
    expected = exact_pmf(sigma, inner)
    observed = np.array([(draws == k).sum() for k in inner] + [(np.abs(draws) > 6).sum()])
    expected = np.append(expected, 1 - expected.sum()) * n
    assert stats.chisquare(observed, expected).pvalue > 1e-3


@pytest.mark.parametrize("sigma", [0.5, 50.0])
def test_mean_is_zero_and_variance_is_the_exact_discrete_variance(sigma):
    n = 50_000
    draws = sample_discrete_gaussian(n, sigma, seeded(2)).double()
    variance = exact_variance(sigma)
    assert abs(draws.mean().item()) < 5 * math.sqrt(variance / n)
    # Var of the sample variance is about 2σ⁴/n for a near-Gaussian: allow 5 standard errors.
    assert draws.var().item() == pytest.approx(variance, rel=5 * math.sqrt(2 / n))


def test_a_million_samples_well_under_ten_seconds():
    generator = noise_generator()
    start = time.perf_counter()
    draws = sample_discrete_gaussian((1000, 1000), 3.0, generator)
    seconds = time.perf_counter() - start
    assert draws.shape == (1000, 1000) and draws.dtype == torch.int64
    assert seconds < 10, f"10^6 discrete Gaussian samples took {seconds:.2f} s"
    assert draws.double().var().item() == pytest.approx(exact_variance(3.0), rel=0.01)


def test_shape_dtype_and_reproducibility_with_a_test_seed():
    a = sample_discrete_gaussian((3, 4), 2.0, seeded(5))
    b = sample_discrete_gaussian((3, 4), 2.0, seeded(5))
    assert a.shape == (3, 4) and a.dtype == torch.int64 and torch.equal(a, b)
    assert sample_discrete_gaussian(0, 2.0, seeded(5)).shape == (0,)


def test_acceptance_exponent_is_exact_on_both_paths():
    params = rational_variance(1.5)
    small_limit = (2**31 + params.c) // params.b
    x = torch.tensor([0, 1, 2, 7, small_limit, small_limit + 1, 10**9, 10**15])
    k, r = dg._acceptance_exponent(x, params)
    for xi, ki, ri in zip(x.tolist(), k.tolist(), r.tolist(), strict=True):
        gamma = Fraction((params.b * xi - params.c) ** 2, params.d)
        assert 0 <= ri < params.d
        assert ki == min(math.floor(gamma), 2**62)
        if ki < 2**62:
            assert ki + Fraction(ri, params.d) == gamma
    # The exponent is (|Y| - σ²/t)² / 2σ² with σ² = t·c/b.
    sigma2 = params.variance
    assert int(k[3]) + Fraction(int(r[3]), params.d) == (7 - sigma2 / params.t) ** 2 / (2 * sigma2)


def test_uniform_below_is_in_range_and_uniform():
    generator = seeded(3)
    draws = uniform_below(3, 300_000, generator)
    assert draws.min() >= 0 and draws.max() <= 2
    counts = torch.bincount(draws, minlength=3).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    assert torch.equal(uniform_below(1, 5, generator), torch.zeros(5, dtype=torch.int64))
    assert uniform_below(2**62, 1000, generator).max() < 2**62


def test_bernoulli_coins_have_the_stated_probabilities():
    generator, n = seeded(4), 100_000

    def assert_rate(coins: torch.Tensor, p: float) -> None:
        assert abs(coins.double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)

    assert_rate(dg._bernoulli_exp_minus_one(n, generator), math.exp(-1))
    r = torch.full((n,), 3)
    assert_rate(dg._bernoulli_exp_fraction(r, 7, generator), math.exp(-3 / 7))
    k = torch.full((n,), 2)
    assert_rate(dg._bernoulli_exp(k, torch.full((n,), 1), 4, generator), math.exp(-2.25))
    assert_rate(dg._coin(2, 5, n, generator), 0.4)
    # The loop resumed after the first 18 coins (the rare tail of Bernoulli(e⁻¹)):
    # P[K odd | K ≥ 19] = Σ_{odd k ≥ 19} P[K = k | K ≥ 19], with P[K > k | K ≥ 19] = 18!/k!.
    tail = sum((math.factorial(18) / math.factorial(k - 1)) * (1 - 1 / k) for k in range(19, 60, 2))
    assert_rate(dg._bernoulli_exp_fraction(None, 1, generator, n=n, first=19), tail)


def test_discrete_laplace_has_geometric_tails():
    t, n = 3, 100_000
    draws = dg._discrete_laplace(n, t, seeded(6)).numpy()
    support = np.arange(-8, 9)
    pmf = np.exp(-np.abs(support) / t) * math.tanh(1 / (2 * t))
    observed = np.array([(draws == k).sum() for k in support] + [(np.abs(draws) > 8).sum()])
    expected = np.append(pmf, 1 - pmf.sum()) * n
    assert stats.chisquare(observed, expected).pvalue > 1e-3


@pytest.mark.parametrize("sigma", [0.05, 2e7, float("nan"), float("inf"), -1.0])
def test_sigma_out_of_range_is_refused(sigma):
    with pytest.raises(ConfigError, match=r"sigma must be in \[0.1, 1e\+07\] \(got"):
        sample_discrete_gaussian(3, sigma, seeded())


@pytest.mark.parametrize("sigma", ["1.0", True, None])
def test_sigma_must_be_a_number(sigma):
    with pytest.raises(ConfigError, match=r"sigma must be a number in \[0.1, 1e\+07\]"):
        rational_variance(sigma)


def test_sigma_messages_say_what_to_do():
    with pytest.raises(ConfigError, match=r"\(got 0.05\): below 0.1 the noise is almost surely 0"):
        sample_discrete_gaussian(3, 0.05, seeded())
    with pytest.raises(ConfigError, match=r"\(got 20000000.0\): rescale the data to a coarser"):
        sample_discrete_gaussian(3, 2e7, seeded())


@pytest.mark.parametrize("shape", [-1, (2, -3), (2.0,), "3"])
def test_bad_shape_is_refused(shape):
    with pytest.raises(ConfigError, match=r"shape must be non-negative integers \(got"):
        sample_discrete_gaussian(shape, 1.0, seeded())


def test_generator_must_be_a_torch_generator():
    with pytest.raises(ConfigError, match=r"generator must be a torch.Generator .*\(got int\)"):
        sample_discrete_gaussian(3, 1.0, 42)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_samples_on_the_generator_device():
    draws = sample_discrete_gaussian(10_000, 2.0, seeded(device="cuda"))
    assert draws.device.type == "cuda"
    assert draws.double().var().item() == pytest.approx(exact_variance(2.0), rel=0.1)
