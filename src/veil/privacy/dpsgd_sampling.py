"""Poisson sampling of DP-SGD batches, and fixed-capacity padding for variable batch sizes.

Poisson sampling includes each of the N rows in a step's batch independently with probability q
(the sample rate), so the batch size is Binomial(N, q) with mean q·N. The accountant's
amplification by subsampling assumes exactly this, and it is part of the privacy mechanism: who
is in a batch must be as unpredictable as the noise, so the draws come from a generator of
`veil.randomness.noise_generator` (OS entropy), never from the user's seed.

A batch of varying size can be cut into chunks of one fixed ``capacity`` (the last one padded,
with a 0/1 mask marking real rows), so that vmapped, compiled or pre-allocated code sees one shape
whatever the draw; the chunks' clipped sums add up to the batch's.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from veil.errors import check


def check_sample_rate(sample_rate: float) -> None:
    """`ConfigError` unless 0 < q ≤ 1."""
    check(0 < sample_rate <= 1, f"sample_rate must be in (0, 1] (got {sample_rate})")


def poisson_sample(num_rows: int, sample_rate: float, generator: torch.Generator) -> Tensor:
    """Indices of the rows drawn: each of ``num_rows`` independently with probability q."""
    check(num_rows >= 1, f"num_rows must be >= 1 (got {num_rows})")
    check_sample_rate(sample_rate)
    draws = torch.rand(num_rows, generator=generator, device=generator.device)
    return torch.nonzero(draws < sample_rate).flatten()


def pad_to_capacity(indices: Tensor, capacity: int) -> tuple[Tensor, Tensor]:
    """``(index [K, capacity], mask [K, capacity])``: ``indices`` in K = ⌈n / capacity⌉ chunks.

    Padding slots (mask 0) repeat the first index so that they hold a real, finite row; an empty
    draw gives one all-padding chunk (index 0), so a step always runs and always adds its noise.
    """
    check(capacity >= 1, f"capacity must be >= 1 (got {capacity})")
    count = indices.numel()
    chunks = max(1, -(-count // capacity))
    index = torch.zeros(chunks * capacity, dtype=torch.long, device=indices.device)
    mask = torch.zeros(chunks * capacity, device=indices.device)
    index[:count] = indices
    index[count:] = indices[0] if count else 0
    mask[:count] = 1
    return index.view(chunks, capacity), mask.view(chunks, capacity)


class PoissonBatchSampler:
    """A ``DataLoader`` batch sampler: ``steps`` Poisson batches (row index lists) per epoch."""

    def __init__(
        self, num_rows: int, sample_rate: float, steps: int, generator: torch.Generator
    ) -> None:
        check(num_rows >= 1, f"num_rows must be >= 1 (got {num_rows})")
        check_sample_rate(sample_rate)
        check(steps >= 1, f"steps must be >= 1 (got {steps})")
        self.num_rows, self.sample_rate, self.steps = num_rows, sample_rate, steps
        self.generator = generator

    @property
    def expected_batch_size(self) -> float:
        """q·N, the public denominator of DP-SGD's average."""
        return self.sample_rate * self.num_rows

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            yield poisson_sample(self.num_rows, self.sample_rate, self.generator).tolist()
