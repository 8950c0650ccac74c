import math
import warnings

import pytest
import torch
from dp_accounting import dp_event
from scipy import stats

from veil.errors import ConfigError
from veil.privacy.accounting import epsilon
from veil.privacy.mechanisms import (
    discrete_gaussian_mechanism,
    gaussian_mechanism,
    laplace_mechanism,
    randomized_response,
)
from veil.randomness import InsecureNoiseWarning, noise_generator

N = 200_000


def seeded(seed: int = 0, device: str = "cpu") -> torch.Generator:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        return noise_generator(seed_for_testing=seed, device=device)


def test_gaussian_noise_std_is_noise_multiplier_times_sensitivity():
    value = torch.full((N,), 5.0)
    noisy, event = gaussian_mechanism(value, 2.0, 1.5, seeded(1))
    noise = (noisy - value).double()
    assert noisy.dtype == torch.float32
    assert noise.std().item() == pytest.approx(3.0, rel=0.01)
    assert abs(noise.mean().item()) < 5 * 3.0 / math.sqrt(N)
    assert event == dp_event.GaussianDpEvent(1.5)


def test_gaussian_keeps_half_precision_and_shape():
    value = torch.zeros(4, 3, dtype=torch.float16)
    noisy, _ = gaussian_mechanism(value, 1.0, 1.0, seeded())
    assert noisy.dtype == torch.float16 and noisy.shape == (4, 3)


def test_laplace_scale_is_sensitivity_over_epsilon():
    sensitivity, eps = 2.0, 0.5
    value = torch.zeros(N, dtype=torch.float64)
    noisy, event = laplace_mechanism(value, sensitivity, eps, seeded(2))
    scale = sensitivity / eps
    assert noisy.abs().mean().item() == pytest.approx(scale, rel=0.01)  # E|Lap(b)| = b
    assert noisy.var().item() == pytest.approx(2 * scale**2, rel=0.02)
    assert stats.kstest(noisy.numpy(), stats.laplace(scale=scale).cdf).pvalue > 1e-3
    assert event == dp_event.LaplaceDpEvent(1 / eps)


def test_laplace_event_is_pure_epsilon_dp():
    _, event = laplace_mechanism(torch.zeros(1), 3.0, 0.8, seeded())
    assert epsilon(event, 1e-12) == pytest.approx(0.8, rel=1e-3)
    # RDP reaches pure DP only as its order → ∞: an upper bound a little above ε.
    assert 0.8 <= epsilon(event, 1e-12, "rdp") <= 0.8 * 1.05


def test_laplace_event_matches_the_closed_form_privacy_profile():
    # Laplace with ε₀ = Δ/b: δ(ε) = 1 - exp((ε - ε₀)/2) for ε ≤ ε₀, so ε(δ) = ε₀ + 2 log(1 - δ).
    _, event = laplace_mechanism(torch.zeros(1), 1.0, 1.0, seeded())
    assert epsilon(event, 0.01) == pytest.approx(1 + 2 * math.log(0.99), rel=1e-3)


def test_discrete_gaussian_adds_integer_noise_and_a_zcdp_event():
    value = torch.arange(50_000, dtype=torch.int32)
    noisy, event = discrete_gaussian_mechanism(value, 4.0, seeded(3), sensitivity=2.0)
    noise = (noisy - value).double()
    assert noisy.dtype == torch.int64
    assert noise.var().item() == pytest.approx(16.0, rel=0.03)
    assert event == dp_event.ZCDpEvent(rho=2.0**2 / (2 * 4.0**2))


def test_discrete_gaussian_event_accounts_like_the_continuous_gaussian_under_rdp():
    _, event = discrete_gaussian_mechanism(torch.zeros(1, dtype=torch.int64), 3.0, seeded())
    continuous = dp_event.GaussianDpEvent(3.0)
    assert epsilon(event, 1e-6, "rdp") == pytest.approx(epsilon(continuous, 1e-6, "rdp"))
    ten = dp_event.SelfComposedDpEvent(event, 10)
    assert epsilon(ten, 1e-6, "rdp") == pytest.approx(
        epsilon(dp_event.GaussianDpEvent(3.0 / math.sqrt(10)), 1e-6, "rdp")
    )
    with pytest.raises(ConfigError, match=r"accountant 'pld' cannot account ZCDpEvent.*'rdp'"):
        epsilon(event, 1e-6, "pld")


def test_randomized_response_keep_rate_and_range():
    k, eps = 5, 1.0
    values = torch.randint(0, k, (N,), generator=torch.Generator().manual_seed(0))
    released, event = randomized_response(values, k, eps, seeded(4))
    keep = math.exp(eps) / (math.exp(eps) + k - 1)
    kept = (released == values).double().mean().item()
    assert abs(kept - keep) < 5 * math.sqrt(keep * (1 - keep) / N)
    assert released.min() >= 0 and released.max() < k and released.dtype == values.dtype
    # A changed entry is uniform over the other k - 1 categories.
    changed = released[(values == 2) & (released != values)]
    counts = torch.bincount(changed, minlength=k)
    assert counts[2] == 0
    assert stats.chisquare(counts[[0, 1, 3, 4]].numpy()).pvalue > 1e-3
    assert event == dp_event.RandomizedResponseDpEvent(k / (math.exp(eps) + k - 1), k)


def test_randomized_response_with_a_huge_epsilon_keeps_everything():
    values = torch.arange(6) % 3
    released, event = randomized_response(values, 3, 1000.0, seeded())
    assert torch.equal(released, values)
    assert event.noise_parameter == 0.0 and event.num_buckets == 3


def test_randomized_response_with_two_categories_flips_to_the_other():
    values = torch.tensor([0, 1] * 1000, dtype=torch.int32)
    released, _ = randomized_response(values, 2, 0.1, seeded(5))
    assert set(released.tolist()) <= {0, 1}
    assert (released != values).any()


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_randomized_response_event_is_epsilon_dp_under_replace_one(accountant):
    _, event = randomized_response(torch.zeros(1, dtype=torch.int64), 4, 1.0, seeded())
    eps = epsilon(event, 1e-12, accountant, "replace_one")
    # PLD is tight; RDP reaches pure DP only as its order → ∞ (an upper bound a little above).
    assert 1.0 - 1e-3 <= eps <= (1.0 + 1e-3 if accountant == "pld" else 1.05)
    with pytest.raises(ConfigError, match=r"neighboring='replace_one'"):
        epsilon(event, 1e-6, accountant, "add_remove")


def test_randomized_response_event_matches_the_closed_form_privacy_profile():
    # Outputs x with probability a = e^ε/(e^ε+k-1) under x, b = 1/(e^ε+k-1) under x':
    # δ(ε') = a - e^{ε'} b, so ε'(δ) = ε + log(1 - δ/a).
    k, eps, delta = 4, 1.0, 0.05
    _, event = randomized_response(torch.zeros(1, dtype=torch.int64), k, eps, seeded())
    a = math.exp(eps) / (math.exp(eps) + k - 1)
    expected = eps + math.log(1 - delta / a)
    # PLD rounds RR's privacy loss up to its grid (one step of about 10⁻³ here): an upper bound.
    assert expected <= epsilon(event, delta, "pld", "replace_one") <= expected * 1.002


FLOATS, INTS = torch.zeros(2), torch.zeros(2, dtype=torch.int64)
BAD_ARGUMENTS = [
    (gaussian_mechanism, (FLOATS, 0.0, 1.0), r"sensitivity must be > 0 \(got 0.0\)"),
    (gaussian_mechanism, (FLOATS, math.nan, 1.0), r"sensitivity must be > 0 \(got nan\)"),
    (gaussian_mechanism, (FLOATS, 1.0, -1.0), r"noise multiplier must be > 0 \(got -1.0\)"),
    (gaussian_mechanism, (FLOATS, 1.0, math.inf), r"noise multiplier must be finite \(got inf\)"),
    (gaussian_mechanism, (FLOATS, 1.0, "1"), r"noise multiplier must be a number > 0 \(got '1'\)"),
    (
        gaussian_mechanism,
        (INTS, 1.0, 1.0),
        r"value must be a floating-point tensor \(got torch.int64\); "
        r"for integer data use discrete_gaussian_mechanism",
    ),
    (gaussian_mechanism, ([0.0], 1.0, 1.0), r"value must be a floating-point tensor \(got list\)"),
    (
        gaussian_mechanism,
        (torch.zeros(2, device="meta"), 1.0, 1.0),
        r"generator is on cpu but the data are on meta",
    ),
    (laplace_mechanism, (FLOATS, 1.0, 0.0), r"epsilon must be > 0 \(got 0.0\)"),
    (laplace_mechanism, (FLOATS, -2.0, 1.0), r"sensitivity must be > 0 \(got -2.0\)"),
    (
        laplace_mechanism,
        (torch.zeros(2, dtype=torch.int32), 1.0, 1.0),
        r"value must be a floating-point tensor \(got torch.int32\)",
    ),
    (
        discrete_gaussian_mechanism,
        (FLOATS, 1.0),
        r"value must be a tensor with an integer dtype \(got torch.float32\)",
    ),
    (
        discrete_gaussian_mechanism,
        (torch.zeros(2, dtype=torch.bool), 1.0),
        r"value must be a tensor with an integer dtype \(got torch.bool\)",
    ),
    (discrete_gaussian_mechanism, (INTS, 0.0), r"sigma must be in \[0.1, 1e\+07\] \(got 0.0\)"),
    (
        randomized_response,
        (INTS, 1, 1.0),
        r"number of categories must be an integer >= 2 \(got 1\)",
    ),
    (
        randomized_response,
        (INTS, 2.5, 1.0),
        r"number of categories must be an integer >= 2 \(got 2.5\)",
    ),
    (
        randomized_response,
        (torch.tensor([0, 3]), 3, 1.0),
        r"values must be in \[0, 3\) \(got min 0, max 3\)",
    ),
    (
        randomized_response,
        (torch.tensor([-1, 0]), 3, 1.0),
        r"values must be in \[0, 3\) \(got min -1, max 0\)",
    ),
    (
        randomized_response,
        (FLOATS, 3, 1.0),
        r"values must be a tensor with an integer dtype \(got torch.float32\)",
    ),
    (randomized_response, (INTS, 3, math.nan), r"epsilon must be > 0 \(got nan\)"),
]


@pytest.mark.parametrize(("mechanism", "arguments", "message"), BAD_ARGUMENTS)
def test_bad_arguments_are_refused_with_a_clear_message(mechanism, arguments, message):
    with pytest.raises(ConfigError, match=message):
        mechanism(*arguments, seeded())


def test_bad_generator_and_sensitivity_keyword_are_refused():
    with pytest.raises(ConfigError, match=r"generator must be a torch.Generator .*\(got int\)"):
        gaussian_mechanism(FLOATS, 1.0, 1.0, 7)
    with pytest.raises(ConfigError, match=r"sensitivity must be > 0 \(got 0\)"):
        discrete_gaussian_mechanism(INTS, 1.0, seeded(), sensitivity=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mechanisms_run_on_cuda_with_a_cuda_generator():
    generator = seeded(device="cuda")
    noisy, _ = gaussian_mechanism(torch.zeros(1000, device="cuda"), 1.0, 1.0, generator)
    assert noisy.device.type == "cuda"
    noisy, _ = laplace_mechanism(torch.zeros(1000, device="cuda"), 1.0, 1.0, generator)
    assert noisy.device.type == "cuda"
    ints = torch.zeros(1000, dtype=torch.int64, device="cuda")
    noisy, _ = discrete_gaussian_mechanism(ints, 2.0, generator)
    assert noisy.device.type == "cuda"
    released, _ = randomized_response(ints, 3, 1.0, generator)
    assert released.device.type == "cuda"
    with pytest.raises(ConfigError, match="generator is on cuda"):
        gaussian_mechanism(torch.zeros(3), 1.0, 1.0, generator)
