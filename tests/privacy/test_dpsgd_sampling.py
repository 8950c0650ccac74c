import math

import pytest
import torch

from veil.errors import ConfigError
from veil.privacy.dpsgd_sampling import PoissonBatchSampler, pad_to_capacity, poisson_sample
from veil.randomness import InsecureNoiseWarning, noise_generator


def seeded(stream=0):
    with pytest.warns(InsecureNoiseWarning):
        return noise_generator(seed_for_testing=5, stream=stream)


def test_each_row_is_drawn_at_the_sample_rate():
    rows, q, draws = 1000, 0.05, 200
    generator = seeded()
    counts = torch.zeros(rows)
    sizes = []
    for _ in range(draws):
        index = poisson_sample(rows, q, generator)
        counts[index] += 1
        sizes.append(len(index))
        assert len(set(index.tolist())) == len(index)
    mean_size = sum(sizes) / draws  # mean of draws × Binomial(1000, 0.05): sd 6.9/√200
    assert abs(mean_size - rows * q) < 4 * math.sqrt(rows * q * (1 - q) / draws)
    assert abs(counts.mean().item() / draws - q) < 0.002
    assert torch.var(torch.tensor(sizes, dtype=torch.float)).item() == pytest.approx(
        rows * q * (1 - q), rel=0.35
    )


def test_draws_come_from_the_noise_generator():
    a = poisson_sample(100, 0.5, seeded(stream=2))
    b = poisson_sample(100, 0.5, seeded(stream=2))
    assert torch.equal(a, b)
    assert not torch.equal(poisson_sample(100, 0.5, noise_generator()), a)


def test_pad_to_capacity_splits_into_fixed_chunks_with_a_mask():
    index, mask = pad_to_capacity(torch.arange(10, 17), 3)
    assert index.shape == mask.shape == (3, 3)
    assert index.flatten()[:7].tolist() == list(range(10, 17))
    assert mask.flatten().tolist() == [1] * 7 + [0, 0]
    assert index.flatten()[7:].tolist() == [10, 10]


def test_an_empty_draw_is_one_chunk_of_padding():
    index, mask = pad_to_capacity(torch.zeros(0, dtype=torch.long), 4)
    assert index.shape == (1, 4) and mask.sum() == 0


def test_batch_sampler_yields_steps_batches():
    sampler = PoissonBatchSampler(50, 0.2, 7, seeded())
    batches = list(sampler)
    assert len(sampler) == len(batches) == 7
    assert sampler.expected_batch_size == pytest.approx(10.0)
    assert all(all(0 <= i < 50 for i in batch) for batch in batches)
    assert len({len(b) for b in batches}) > 1  # the batch size varies


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: poisson_sample(10, 0.0, noise_generator()), r"sample_rate must be in \(0, 1\]"),
        (lambda: poisson_sample(10, 1.5, noise_generator()), r"\(got 1.5\)"),
        (lambda: poisson_sample(0, 0.5, noise_generator()), r"num_rows must be >= 1 \(got 0\)"),
        (lambda: pad_to_capacity(torch.arange(3), 0), r"capacity must be >= 1 \(got 0\)"),
        (lambda: PoissonBatchSampler(10, 0.5, 0, noise_generator()), r"steps must be >= 1"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ConfigError, match=message):
        call()
