"""Client sampling: which clients take part in a round.

Three schemes: a fixed number of clients without replacement, a fraction of the population, and
Poisson sampling (each client independently with probability q), the scheme whose privacy
amplification dp-accounting's ``PoissonSampledDpEvent`` describes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from veil.errors import check


@dataclass(frozen=True)
class FixedCountSampler:
    """Exactly ``clients_per_round`` distinct clients, uniformly at random."""

    clients_per_round: int

    def check(self, num_clients: int) -> None:
        """Raise `ConfigError` unless this sampler can draw from ``num_clients`` clients."""
        check(
            1 <= self.clients_per_round <= num_clients,
            f"federation.clients_per_round must be in [1, {num_clients}] "
            f"(the number of clients) (got {self.clients_per_round})",
        )

    def expected_count(self, num_clients: int) -> float:
        """Clients per round (capped at the population)."""
        return float(min(self.clients_per_round, num_clients))

    def sample(self, num_clients: int, rng: np.random.Generator) -> np.ndarray:
        self.check(num_clients)
        return np.sort(rng.choice(num_clients, size=self.clients_per_round, replace=False))


@dataclass(frozen=True)
class FractionSampler:
    """``max(1, round(fraction · N))`` distinct clients, uniformly at random."""

    fraction: float

    def check(self, num_clients: int) -> None:
        """Raise `ConfigError` unless the fraction is in (0, 1]."""
        check(
            0 < self.fraction <= 1, f"federation.fraction must be in (0, 1] (got {self.fraction})"
        )

    def expected_count(self, num_clients: int) -> float:
        """``max(1, round(fraction · N))``, rounding halves up."""
        return float(max(1, math.floor(self.fraction * num_clients + 0.5)))

    def sample(self, num_clients: int, rng: np.random.Generator) -> np.ndarray:
        self.check(num_clients)
        count = int(self.expected_count(num_clients))
        return FixedCountSampler(count).sample(num_clients, rng)


@dataclass(frozen=True)
class PoissonSampler:
    """Each client independently with probability ``rate``; the round may be empty."""

    rate: float

    def check(self, num_clients: int) -> None:
        """Raise `ConfigError` unless the rate is in (0, 1]."""
        check(0 < self.rate <= 1, f"federation.poisson_rate must be in (0, 1] (got {self.rate})")

    def expected_count(self, num_clients: int) -> float:
        """``q · N`` (a round may hold any number)."""
        return self.rate * num_clients

    def sample(self, num_clients: int, rng: np.random.Generator) -> np.ndarray:
        self.check(num_clients)
        return np.flatnonzero(rng.random(num_clients) < self.rate)


ClientSampler = FixedCountSampler | FractionSampler | PoissonSampler
