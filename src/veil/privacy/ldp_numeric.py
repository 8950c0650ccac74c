"""Local DP for one bounded number per user: Laplace or Gaussian noise, and the mean estimate.

Threat model: the server is untrusted; each user clips its value ``x`` to ``[lower, upper]`` and
sends ``clip(x) + noise``, so each report alone is ε-LDP (Laplace) or (ε, δ)-LDP (Gaussian)
against anyone who sees it. Neighbouring inputs are any two values of one user, so the
sensitivity is the whole range ``Δ = upper - lower``:

- Laplace: noise ``Lap(b)`` with ``b = Δ / ε`` (Dwork, McSherry, Nissim, Smith 2006), pure ε-LDP;
- Gaussian: noise ``N(0, σ^2)`` with the smallest ``σ`` that is (ε, δ)-DP for sensitivity ``Δ``,
  the analytic Gaussian mechanism of Balle and Wang (2018), computed by dp-accounting.

The noise has mean zero, so the mean of the reports is an unbiased estimate of the mean of the
clipped values, with variance ``2 b^2 / n`` (Laplace) or ``σ^2 / n`` (Gaussian) from the noise.

Neither is floating-point safe: adding continuous noise in floating point leaks through the
low-order bits of the result (Mironov 2012). Use them for simulation and research; for a
deployment, discretise the value and use a discrete mechanism (`veil.privacy.mechanisms`).
"""

from __future__ import annotations

import math

import torch
from dp_accounting import dp_event
from dp_accounting.gaussian_mechanism import get_sigma_gaussian

from veil.errors import check
from veil.privacy.ldp import MAX_EPSILON

__all__ = [
    "estimate_mean",
    "gaussian_mean_variance",
    "gaussian_randomize",
    "gaussian_sigma",
    "laplace_mean_variance",
    "laplace_randomize",
    "laplace_scale",
]


def _check_range(lower: float, upper: float) -> None:
    check(
        math.isfinite(lower) and math.isfinite(upper) and lower < upper,
        f"lower and upper must be finite with lower < upper (got {lower}, {upper})",
    )


def _check_epsilon(epsilon: float) -> None:
    check(0 < epsilon <= MAX_EPSILON, f"epsilon must be in (0, {MAX_EPSILON}] (got {epsilon})")


def _check_values(values: torch.Tensor) -> None:
    check(
        values.is_floating_point() and values.ndim == 1,
        f"values must be a 1-D floating-point tensor, one value per user "
        f"(got {values.dtype} with shape {tuple(values.shape)})",
    )
    check(not values.isnan().any().item(), "values must not contain NaN")


def laplace_scale(*, lower: float, upper: float, epsilon: float) -> float:
    """The Laplace scale ``b = (upper - lower) / ε`` that makes one report ε-LDP."""
    _check_range(lower, upper)
    _check_epsilon(epsilon)
    return (upper - lower) / epsilon


def gaussian_sigma(*, lower: float, upper: float, epsilon: float, delta: float) -> float:
    """The smallest ``σ`` for which one report is (ε, δ)-LDP (analytic Gaussian mechanism)."""
    _check_range(lower, upper)
    _check_epsilon(epsilon)
    check(0 < delta < 1, f"delta must be in (0, 1) (got {delta})")
    return (upper - lower) * get_sigma_gaussian(epsilon, delta)


def laplace_randomize(
    values: torch.Tensor,
    *,
    lower: float,
    upper: float,
    epsilon: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, dp_event.LaplaceDpEvent]:
    """Each user's report ``clip(x, lower, upper) + Lap(b)``, float64 ``[n]``, and its event.

    The event is ``LaplaceDpEvent(b / Δ)``: its unit sensitivity is the whole range ``Δ``, which
    is exactly the local adjacency, so evaluate it with ``NeighborRel.ADD_OR_REMOVE_ONE``.
    ``generator`` is privacy noise: use `veil.randomness.noise_generator`.
    """
    _check_values(values)
    scale = laplace_scale(lower=lower, upper=upper, epsilon=epsilon)
    n = values.numel()
    # The difference of two independent Exp(1) draws is a Laplace(1) draw.
    exponentials = torch.empty(2, n, dtype=torch.float64).exponential_(generator=generator)
    noise = scale * (exponentials[0] - exponentials[1])
    reports = values.double().clamp(lower, upper) + noise
    return reports, dp_event.LaplaceDpEvent(scale / (upper - lower))


def gaussian_randomize(
    values: torch.Tensor,
    *,
    lower: float,
    upper: float,
    epsilon: float,
    delta: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, dp_event.GaussianDpEvent]:
    """Each user's report ``clip(x, lower, upper) + N(0, σ^2)``, float64 ``[n]``, and its event.

    The event is ``GaussianDpEvent(σ / Δ)`` (unit sensitivity = the whole range ``Δ``).
    ``generator`` is privacy noise: use `veil.randomness.noise_generator`.
    """
    _check_values(values)
    sigma = gaussian_sigma(lower=lower, upper=upper, epsilon=epsilon, delta=delta)
    noise = sigma * torch.randn(values.numel(), dtype=torch.float64, generator=generator)
    reports = values.double().clamp(lower, upper) + noise
    return reports, dp_event.GaussianDpEvent(sigma / (upper - lower))


def estimate_mean(reports: torch.Tensor) -> float:
    """The mean of the reports: unbiased for the mean of the users' clipped values."""
    check(reports.ndim == 1 and reports.numel() >= 1, "reports must be a non-empty 1-D tensor")
    return reports.double().mean().item()


def laplace_mean_variance(num_users: int, *, lower: float, upper: float, epsilon: float) -> float:
    """Variance of `estimate_mean` over ``num_users`` Laplace reports: ``2 b^2 / n``."""
    check(num_users >= 1, f"num_users must be >= 1 (got {num_users})")
    return 2 * laplace_scale(lower=lower, upper=upper, epsilon=epsilon) ** 2 / num_users


def gaussian_mean_variance(
    num_users: int, *, lower: float, upper: float, epsilon: float, delta: float
) -> float:
    """Variance of `estimate_mean` over ``num_users`` Gaussian reports: ``σ^2 / n``."""
    check(num_users >= 1, f"num_users must be >= 1 (got {num_users})")
    sigma = gaussian_sigma(lower=lower, upper=upper, epsilon=epsilon, delta=delta)
    return sigma**2 / num_users
