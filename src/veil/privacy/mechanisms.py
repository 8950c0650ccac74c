"""Additive-noise and randomized-response mechanisms, each returning the DpEvent that describes it.

Every mechanism takes the ``torch.Generator`` its noise comes from; pass one made by
``veil.randomness.noise_generator()`` (seeded from the OS's cryptographic source, never from the
user's seed), on the same device as the data.

Floating-point safety (Mironov 2012, "On significance of the least significant bits for
differential privacy"): a float sampler cannot output every real number, and which floats it can
output near a value v depends on v, so the low-order bits of a released float can reveal v and void
the guarantee. ``gaussian_mechanism`` and ``laplace_mechanism`` add such float noise: their
guarantee is that of the ideal real-valued mechanism, which the released floats only approximate.
``discrete_gaussian_mechanism`` and ``randomized_response`` release integers drawn from exactly
(or, for randomized response, to within 2⁻⁵³ of) the stated distribution: they are floating-point
safe. Use the discrete mechanism whenever the data are integers.
"""

from __future__ import annotations

import math
import numbers

import torch
from dp_accounting import dp_event
from torch import Tensor

from veil.errors import ConfigError
from veil.privacy.discrete_gaussian import sample_discrete_gaussian, uniform_below


def gaussian_mechanism(
    value: Tensor, sensitivity: float, noise_multiplier: float, generator: torch.Generator
) -> tuple[Tensor, dp_event.DpEvent]:
    """value + N(0, (noise_multiplier · sensitivity)²) per coordinate (Dwork & Roth 2014, §3.5).

    ``sensitivity`` is the L2 sensitivity of ``value`` under the neighbouring relation the
    accountant will use (for add/remove: the norm bound of one record's contribution). The event
    is ``GaussianDpEvent(noise_multiplier)``, dp-accounting's noise std / L2 sensitivity. This is
    the mechanism of DP-SGD and DP-FedAvg. NOT floating-point safe (Mironov 2012): the released
    floats carry the guarantee of the ideal real-valued mechanism only approximately; for integer
    data use ``discrete_gaussian_mechanism``.
    """
    _check_float_tensor(value)
    _check_positive("sensitivity", sensitivity)
    _check_positive("noise multiplier", noise_multiplier)
    _check_generator(value, generator)
    noise = torch.randn(
        value.shape, generator=generator, device=value.device, dtype=_sampling_dtype(value)
    )
    noisy = (value + noise * (noise_multiplier * sensitivity)).to(value.dtype)
    return noisy, dp_event.GaussianDpEvent(noise_multiplier)


def laplace_mechanism(
    value: Tensor, sensitivity: float, epsilon: float, generator: torch.Generator
) -> tuple[Tensor, dp_event.DpEvent]:
    """value + Laplace(0, b) per coordinate with b = sensitivity/ε: ε-DP (Dwork et al. 2006).

    ``sensitivity`` is the L1 sensitivity. Laplace(b) is drawn as b·(E₁ - E₂), E ~ Exp(1). The
    event is ``LaplaceDpEvent(1/ε)``: dp-accounting's noise_multiplier is b / (L1 sensitivity),
    and its accountants read it as ε = 1/noise_multiplier. NOT floating-point safe (Mironov 2012
    shows exactly this mechanism leaking through low-order bits); for integer data use
    ``discrete_gaussian_mechanism``.
    """
    _check_float_tensor(value)
    _check_positive("sensitivity", sensitivity)
    _check_positive("epsilon", epsilon)
    _check_generator(value, generator)
    dtype = _sampling_dtype(value)
    exponentials = torch.empty((2, *value.shape), device=value.device, dtype=dtype)
    exponentials.exponential_(generator=generator)
    noise = (exponentials[0] - exponentials[1]) * (sensitivity / epsilon)
    return (value + noise).to(value.dtype), dp_event.LaplaceDpEvent(1 / epsilon)


def discrete_gaussian_mechanism(
    value: Tensor, sigma: float, generator: torch.Generator, *, sensitivity: float = 1.0
) -> tuple[Tensor, dp_event.DpEvent]:
    """value + N_Z(0, σ²) per coordinate, exactly sampled (Canonne, Kamath, Steinke 2020).

    ``value`` must have an integer dtype; the result is int64. ``sigma`` is the noise scale in the
    data's integer units and ``sensitivity`` the L2 sensitivity of ``value`` (default 1, a
    counting query). Floating-point safe: the noise is an integer drawn exactly (see
    ``veil.privacy.discrete_gaussian``).

    dp-accounting has no discrete-Gaussian event. CKS 2020 prove that adding independent discrete
    Gaussians gives the continuous Gaussian's Rényi-DP bound, α·Δ²/(2σ²) at every order α, i.e.
    ρ-zCDP with ρ = Δ²/(2σ²); the event is therefore ``ZCDpEvent(ρ)``. Only the RDP accountant
    consumes it (``epsilon(..., accountant="rdp")``), where it gives the same ε as
    ``GaussianDpEvent(σ/Δ)``. The sampler rounds σ² up, never down, so ρ computed from ``sigma``
    holds for the noise drawn.
    """
    _check_integer_tensor("value", value)
    _check_positive("sensitivity", sensitivity)
    _check_generator(value, generator)
    noise = sample_discrete_gaussian(value.shape, sigma, generator)
    return value.to(torch.int64) + noise, dp_event.ZCDpEvent(sensitivity**2 / (2 * sigma**2))


def randomized_response(
    values: Tensor, num_categories: int, epsilon: float, generator: torch.Generator
) -> tuple[Tensor, dp_event.DpEvent]:
    """k-ary randomized response (Warner 1965): ε-local DP for one category per entry.

    Each entry of ``values`` (integers in [0, k)) is kept with probability e^ε/(e^ε + k - 1) and
    otherwise replaced by a uniformly random *other* category, so every output is e^ε times more
    likely under the true category than under any other. In dp-accounting's parametrization
    (keep with probability 1 - p, else a uniform draw over all k) that is p = k/(e^ε + k - 1):
    the event is ``RandomizedResponseDpEvent(p, k)``, which both accountants support under the
    ``replace_one`` relation only (a user's value changes; nobody is added). Floating-point safe:
    the output is a category, the other category an exact uniform integer, and the keep coin a
    float64 uniform (its probability exact to 2⁻⁵³).
    """
    _check_integer_tensor("values", values)
    if isinstance(num_categories, bool) or not isinstance(num_categories, numbers.Integral):
        raise ConfigError(f"number of categories must be an integer >= 2 (got {num_categories!r})")
    if num_categories < 2:
        raise ConfigError(f"number of categories must be an integer >= 2 (got {num_categories})")
    _check_positive("epsilon", epsilon)
    _check_generator(values, generator)
    if values.numel() and (values.min() < 0 or values.max() >= num_categories):
        raise ConfigError(
            f"values must be in [0, {num_categories}) (got min {int(values.min())}, "
            f"max {int(values.max())})"
        )
    k = int(num_categories)
    odds = (k - 1) * math.exp(-epsilon)  # (k - 1)/e^ε, stable for any ε > 0
    keep_probability = 1 / (1 + odds)
    device = values.device
    keep = (
        torch.rand(values.shape, generator=generator, device=device, dtype=torch.float64)
        < keep_probability
    )
    other = uniform_below(k - 1, values.numel(), generator).view(values.shape)
    other += other >= values  # uniform over the k - 1 other categories
    released = torch.where(keep, values, other.to(values.dtype))
    return released, dp_event.RandomizedResponseDpEvent(k * math.exp(-epsilon) / (1 + odds), k)


def _check_positive(name: str, number: float) -> None:
    if isinstance(number, bool) or not isinstance(number, numbers.Real):
        raise ConfigError(f"{name} must be a number > 0 (got {number!r})")
    if not number > 0:
        raise ConfigError(f"{name} must be > 0 (got {number})")
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be finite (got {number})")


def _check_float_tensor(value: Tensor) -> None:
    if not isinstance(value, Tensor) or not value.is_floating_point():
        dtype = value.dtype if isinstance(value, Tensor) else type(value).__name__
        raise ConfigError(
            f"value must be a floating-point tensor (got {dtype}); "
            "for integer data use discrete_gaussian_mechanism"
        )


def _check_integer_tensor(name: str, value: Tensor) -> None:
    integer = isinstance(value, Tensor) and not (
        value.is_floating_point() or value.is_complex() or value.dtype == torch.bool
    )
    if not integer:
        dtype = value.dtype if isinstance(value, Tensor) else type(value).__name__
        raise ConfigError(f"{name} must be a tensor with an integer dtype (got {dtype})")


def _check_generator(value: Tensor, generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise ConfigError(
            "generator must be a torch.Generator from veil.randomness.noise_generator() "
            f"(got {type(generator).__name__})"
        )
    device = generator.device
    if device.type != value.device.type or (
        device.index is not None and value.device.index not in (None, device.index)
    ):
        raise ConfigError(
            f"generator is on {generator.device} but the data are on {value.device}: make it with "
            f"veil.randomness.noise_generator(device={str(value.device)!r})"
        )


def _sampling_dtype(value: Tensor) -> torch.dtype:
    """Sample in at least float32 (half-precision noise would be needlessly coarse)."""
    return torch.promote_types(value.dtype, torch.float32)
