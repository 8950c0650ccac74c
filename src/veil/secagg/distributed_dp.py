"""Distributed DP: every client adds a share of discrete Gaussian noise before masking.

Kairouz, Liu, Steinke 2021 ("The Distributed Discrete Gaussian Mechanism for Federated Learning
with Secure Aggregation"), Theorem 1 / Prop. 14: if m clients each add N_Z(0, σ_c²)^d (σ_c ≥ ½),
the sum is ρ-zCDP for inputs differing by a vector of L2 norm ≤ Δ, with
ρ = ½ (Δ/(√m σ_c) + τ√d)², τ = 10 Σ_{k=1}^{m−1} exp(−2π²σ_c² k/(k+1)).
With σ_c = σΔ/√m this is ½(1/σ + τ√d)²: the Gaussian mechanism's 1/(2σ²) up to τ, which is
negligible once σ_c is more than a few units.

Neighbouring: zero-out — one participating client's update replaced by zero (the set of
participants and so the noise shares are the same in both worlds). The noise counted is that of
``min_survivors`` clients, the fewest the protocol lets into a sum; more survivors only add
noise. Threat model: the server sees only the masked sum, so nobody — server included — sees a
value with less noise than that. Floating-point safe: noise is sampled exactly on the integers.
"""

from __future__ import annotations

import math

import torch
from dp_accounting import dp_event
from torch import Tensor

from veil.errors import ConfigError
from veil.privacy.discrete_gaussian import sample_discrete_gaussian


def client_noise_std(noise_multiplier: float, sensitivity: float, min_survivors: int) -> float:
    """σ_c so that ``min_survivors`` shares sum to variance (σ·Δ)²."""
    if noise_multiplier <= 0 or min_survivors < 1:
        raise ConfigError("distributed DP needs noise_multiplier > 0 and min_survivors ≥ 1")
    return max(0.5, noise_multiplier * sensitivity / math.sqrt(min_survivors))


def summed_noise_event(
    client_std: float, sensitivity: float, min_survivors: int, length: int
) -> dp_event.ZCDpEvent:
    """The ρ-zCDP event of a secure sum that carries ≥ ``min_survivors`` noise shares."""
    if client_std < 0.5:
        raise ConfigError(
            f"the distributed discrete Gaussian bound needs σ_c ≥ 0.5 (got {client_std})"
        )
    tau = 10 * sum(
        math.exp(-2 * math.pi**2 * client_std**2 * k / (k + 1)) for k in range(1, min_survivors)
    )
    rho = (
        0.5 * (sensitivity / (math.sqrt(min_survivors) * client_std) + tau * math.sqrt(length)) ** 2
    )
    return dp_event.ZCDpEvent(rho)


def client_noise(
    num_clients: int, length: int, client_std: float, generator: torch.Generator
) -> Tensor:
    """(num_clients, length) int64 draws of N_Z(0, σ_c²), one row per client."""
    return sample_discrete_gaussian((num_clients, length), client_std, generator)
