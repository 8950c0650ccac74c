import math
import warnings

import numpy as np
import pytest
import torch
from dp_accounting import dp_event

from veil.errors import ConfigError
from veil.privacy.accounting import epsilon as account
from veil.randomness import InsecureNoiseWarning, noise_generator
from veil.secagg.distributed_dp import client_noise, client_noise_std, summed_noise_event
from veil.secagg.encoding import (
    RingEncoding,
    choose_encoding,
    clip_rows,
    from_ring,
    stochastic_round,
    to_ring,
)


def generator(seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        return noise_generator(seed_for_testing=seed)


def test_round_trip_within_one_quantization_step():
    encoding = choose_encoding(32, 1.0, max_clients=10, length=100)
    x = torch.randn(4, 100, dtype=torch.float64) * 0.05
    ring = to_ring(x, encoding, generator())
    total = np.zeros(100, np.uint32)
    for row in ring:
        total += row
    assert from_ring(total, encoding).sub(x.sum(0)).abs().max() <= 4 / encoding.scale


def test_stochastic_rounding_is_unbiased_and_clipping_bounds_norms():
    x = torch.full((200_000,), 0.3, dtype=torch.float64)
    rounded = stochastic_round(x, generator(1)).double()
    assert set(rounded.unique().tolist()) == {0.0, 1.0}
    assert rounded.mean().item() == pytest.approx(0.3, abs=0.005)
    rows = clip_rows(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 1.0)
    assert torch.allclose(rows, torch.tensor([[0.6, 0.8], [0.3, 0.4]]))


def test_headroom_the_worst_case_sum_does_not_wrap():
    encoding = choose_encoding(16, 2.0, max_clients=50, length=4)
    worst = torch.zeros(50, 4, dtype=torch.float64)
    worst[:, 0] = 2.0  # every client at the clip norm on one coordinate
    total = to_ring(worst, encoding, generator()).sum(axis=0, dtype=np.uint64) % 2**16
    assert from_ring(total.astype(np.uint32), encoding)[0].item() == pytest.approx(100.0, rel=1e-3)
    assert from_ring(
        to_ring(-worst, encoding, generator()).sum(axis=0, dtype=np.uint64).astype(np.uint32)
        % 2**16,
        encoding,
    )[0].item() == pytest.approx(-100.0, rel=1e-3)


def test_too_few_bits_is_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"bits = 12 leave no room.*use bits ≥"):
        choose_encoding(12, 1.0, max_clients=1000, length=10_000)
    with pytest.raises(ConfigError, match="clip_norm must be > 0"):
        choose_encoding(32, 0.0, 10, 10)


def test_sensitivity_accounts_for_rounding():
    assert RingEncoding(32, 1.0, 100.0).sensitivity(16) == 104.0


def test_summed_noise_event_matches_the_gaussian_for_large_shares():
    sigma, delta_2, m = 1.3, 1e4, 7
    std = client_noise_std(sigma, delta_2, m)
    event = summed_noise_event(std, delta_2, m, length=1000)
    assert event.rho == pytest.approx(1 / (2 * sigma**2))
    # The same ε as a Gaussian mechanism of multiplier σ, through the RDP accountant.
    rounds = 10
    ours = account(dp_event.SelfComposedDpEvent(event, rounds), 1e-5, "rdp")
    gaussian = account(
        dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(sigma), rounds), 1e-5, "rdp"
    )
    assert ours == pytest.approx(gaussian, rel=1e-6)


def test_small_shares_pay_the_tau_term():
    event = summed_noise_event(0.6, 1.0, 5, length=100)
    plain = 0.5 * (1.0 / (math.sqrt(5) * 0.6)) ** 2
    assert event.rho > plain
    with pytest.raises(ConfigError, match=r"σ_c ≥ 0\.5"):
        summed_noise_event(0.4, 1.0, 5, 10)


def test_m_shares_sum_to_the_target_noise():
    sigma, delta_2, m = 2.0, 50.0, 4
    std = client_noise_std(sigma, delta_2, m)
    shares = client_noise(m, 50_000, std, generator(2)).double()
    assert shares.sum(0).std().item() == pytest.approx(sigma * delta_2, rel=0.02)
