import numpy as np
import pytest

from veil.errors import ConfigError
from veil.fl.sampling import FixedCountSampler, FractionSampler, PoissonSampler


def test_fixed_count_distinct_sorted_and_reproducible():
    ids = FixedCountSampler(10).sample(100, np.random.default_rng(0))
    assert len(set(ids)) == 10 and list(ids) == sorted(ids) and ids.max() < 100
    assert np.array_equal(ids, FixedCountSampler(10).sample(100, np.random.default_rng(0)))


def test_fraction_rounds_to_at_least_one():
    assert len(FractionSampler(0.1).sample(95, np.random.default_rng(0))) == 10
    assert len(FractionSampler(0.001).sample(10, np.random.default_rng(0))) == 1


def test_poisson_rate_matches_in_expectation_and_can_be_empty():
    rng = np.random.default_rng(0)
    counts = [len(PoissonSampler(0.2).sample(1000, rng)) for _ in range(200)]
    assert abs(np.mean(counts) - 200) < 5
    empties = sum(len(PoissonSampler(0.01).sample(5, rng)) == 0 for _ in range(100))
    assert empties > 80


@pytest.mark.parametrize(
    ("sampler", "message"),
    [
        (FixedCountSampler(11), r"clients_per_round must be in \[1, 10\] .*got 11"),
        (FixedCountSampler(0), r"clients_per_round must be in \[1, 10\]"),
        (FractionSampler(1.5), r"fraction must be in \(0, 1\] \(got 1.5\)"),
        (PoissonSampler(0.0), r"poisson_rate must be in \(0, 1\] \(got 0.0\)"),
    ],
)
def test_bad_sampling_arguments(sampler, message):
    with pytest.raises(ConfigError, match=message):
        sampler.sample(10, np.random.default_rng(0))


def test_expected_count_of_each_sampler():
    assert FixedCountSampler(3).expected_count(10) == 3
    assert FixedCountSampler(30).expected_count(10) == 10
    assert FractionSampler(0.25).expected_count(10) == 3
    assert FractionSampler(0.01).expected_count(10) == 1
    assert PoissonSampler(0.5).expected_count(10) == 5
