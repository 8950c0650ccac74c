import warnings

import dp_accounting
import pytest
import torch

from veil.errors import ConfigError, ProtocolError
from veil.fl.links import ClientUpdates
from veil.params import leading_axis_l2_norms
from veil.privacy.client_dp import (
    adaptive_clipped_gaussian_sum,
    clip_l2,
    gaussian_sum,
    poisson_sampling,
)
from veil.randomness import InsecureNoiseWarning, noise_generator


def key(seed: int = 0) -> torch.Generator:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        return noise_generator(seed_for_testing=seed)


def updates_with_norms(norms) -> ClientUpdates:
    norms = torch.tensor(norms, dtype=torch.float32)
    direction = torch.ones(len(norms), 4) / 2.0  # unit norm rows
    deltas = {"w": direction * norms[:, None]}
    return ClientUpdates(deltas, torch.ones(len(norms)), torch.arange(len(norms)))


def test_clip_l2_bounds_norms_and_keeps_small_updates():
    out, _, events = clip_l2(1.5).apply(updates_with_norms([0.5, 3.0, 1.5]), None, None)
    norms = leading_axis_l2_norms(out.deltas)
    assert torch.allclose(norms, torch.tensor([0.5, 1.5, 1.5])) and events == []
    assert torch.equal(out.deltas["w"][0], updates_with_norms([0.5]).deltas["w"][0])


def test_gaussian_sum_is_unbiased_with_the_calibrated_noise():
    link = gaussian_sum(2.0, 1.0, denominator=4.0, sampling=poisson_sampling(1.0))
    updates = updates_with_norms([1.0, 0.5, 0.2])
    exact = updates.deltas["w"].sum(0) / 4.0
    draws = torch.stack([link.apply(updates, 0, key(i))[0]["w"] for i in range(4000)])
    assert torch.allclose(draws.mean(0), exact, atol=0.03)
    assert abs(float(draws.std()) - 2.0 * 1.0 / 4.0) < 0.02


def test_gaussian_sum_events_and_noise_decay():
    link = gaussian_sum(2.0, 1.0, 4.0, poisson_sampling(0.1), noise_decay=0.5)
    state = link.init({})
    _, state, events = link.apply(updates_with_norms([1.0]), state, key())
    _, state, later = link.apply(updates_with_norms([1.0]), state, key())
    gaussian = dp_accounting.GaussianDpEvent
    assert events == [dp_accounting.PoissonSampledDpEvent(0.1, gaussian(2.0))]
    assert later == [dp_accounting.PoissonSampledDpEvent(0.1, gaussian(1.0))] and state == 2


def test_gaussian_sum_refuses_unclipped_updates():
    link = gaussian_sum(1.0, 1.0, 2.0, poisson_sampling(1.0))
    with pytest.raises(ProtocolError, match=r"norm 3 > clip norm 1: .*\(clip_l2\)"):
        link.apply(updates_with_norms([3.0]), 0, key())


def test_an_empty_round_releases_pure_noise_and_still_counts():
    link = gaussian_sum(1.0, 1.0, 2.0, poisson_sampling(0.5))
    empty = ClientUpdates({"w": torch.zeros(0, 4)}, torch.zeros(0), torch.zeros(0))
    out, _, events = link.apply(empty, 0, key())
    assert out["w"].shape == (4,) and out["w"].abs().sum() > 0 and len(events) == 1


def test_adaptive_clip_norm_tracks_the_target_quantile():
    norms = torch.linspace(0.1, 10.0, 200).tolist()  # median ≈ 5
    link = adaptive_clipped_gaussian_sum(
        1.0,
        0.5,
        target_quantile=0.5,
        learning_rate=0.2,
        denominator=200.0,
        sampling=poisson_sampling(1.0),
    )
    state = link.init({})
    updates = updates_with_norms(norms)
    for i in range(150):
        _, state, events = link.apply(updates, state, key(i))
    assert 4.0 < state[0] < 6.0 and state[1] == 150
    assert events == [dp_accounting.GaussianDpEvent(1.0)]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: clip_l2(0), r"privacy.clip_norm must be > 0 \(got 0\)"),
        (
            lambda: gaussian_sum(0, 1, 1, poisson_sampling(1)),
            r"noise_multiplier must be > 0 \(got 0\)",
        ),
        (lambda: gaussian_sum(1, 1, 0, poisson_sampling(1)), "denominator"),
        (
            lambda: gaussian_sum(1, 1, 1, poisson_sampling(1), 1.5),
            r"noise_decay must be in \(0, 1\]",
        ),
        (lambda: poisson_sampling(0), r"client sampling rate must be in \(0, 1\] \(got 0\)"),
        (
            lambda: adaptive_clipped_gaussian_sum(4, 1, 0.5, 0.2, 10, poisson_sampling(1), 1.0),
            r"bit_noise_multiplier must be > σ/2 = 2",
        ),
        (
            lambda: adaptive_clipped_gaussian_sum(1, 1, 1.5, 0.2, 10, poisson_sampling(1)),
            "target_quantile",
        ),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ConfigError, match=message):
        call()
