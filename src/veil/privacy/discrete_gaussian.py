"""Exact sampling from the discrete Gaussian, vectorized with torch integer operations.

The discrete Gaussian N_Z(0, σ²) puts mass ∝ exp(-k²/2σ²) on every integer k. Canonne, Kamath and
Steinke 2020 ("The Discrete Gaussian for Differential Privacy", Algorithms 1-3) sample it exactly:
propose Y from the discrete Laplace DLap(t), t = ⌊σ⌋ + 1, and accept with probability
exp(-(|Y| - σ²/t)² / 2σ²), where every Bernoulli(exp(-γ)) is itself built from Bernoulli(n/d) coins
on rational γ = n/d. Here every coin is an exact comparison of integers drawn uniformly by
rejection from 62 random bits of ``torch.randint`` (a power-of-two range, so torch's modulo
reduction is unbiased); no floating-point exp or log enters an accept/reject decision.

Floating-point safe: the output is an integer drawn from exactly the stated distribution, so it
has no low-order bits to leak. Continuous samplers are not: Mironov 2012 ("On significance of the
least significant bits for differential privacy") shows that the set of floats a textbook
Laplace/Gaussian sampler can output around a value v depends on v, which can reveal v.

σ² is converted once to the exact fraction t·c/b (b a power of two, c ≥ 2²⁰ an integer) that is
the smallest such fraction ≥ σ²: the noise is never smaller than asked for (the relative excess is
at most 2⁻²⁰), so a privacy guarantee computed for σ also holds for the noise drawn.

Threat model: the coins come from the generator passed in (veil.randomness.noise_generator), so
the draw is as unpredictable as that generator's seed and state.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import NamedTuple

import torch
from torch import Tensor

from veil.errors import ConfigError

SIGMA_RANGE = (0.1, 1e7)
"""σ outside this range is refused: below it the noise is almost surely 0 (rescale the integer data
instead); above it typical draws would leave the sampler's int64 fast path."""

_TWO_62 = 1 << 62
_PRECISION_BITS = 20  # σ² is rounded up by at most a factor 1 + 2⁻²⁰
_SMALL_U = 1 << 31  # |u| ≤ 2³¹ keeps u² within int64


class RationalVariance(NamedTuple):
    """σ² = t·c/b exactly: proposal scale t = ⌊σ⌋ + 1, b = 2^m, and the acceptance exponent
    (|Y| - σ²/t)² / 2σ² = (b|Y| - c)² / d with d = 2·t·c·b."""

    t: int
    c: int
    b: int
    d: int

    @property
    def variance(self) -> Fraction:
        return Fraction(self.t * self.c, self.b)


def rational_variance(sigma: float) -> RationalVariance:
    """The exact rational σ² ≥ sigma² the sampler uses (see the module docstring)."""
    _check_sigma(sigma)
    target = Fraction(sigma) ** 2
    t = math.floor(sigma) + 1
    b = 1
    while target * b / t < 1 << _PRECISION_BITS:
        b *= 2
    c = math.ceil(target * b / t)
    return RationalVariance(t, c, b, 2 * t * c * b)


def sample_discrete_gaussian(
    shape: Sequence[int] | torch.Size | int, sigma: float, generator: torch.Generator
) -> Tensor:
    """int64 tensor of ``shape`` i.i.d. draws from N_Z(0, σ²), on ``generator``'s device.

    CKS 2020 Algorithm 3, vectorized: propose DLap(t) in bulk, accept each candidate Y with
    probability exp(-(|Y| - σ²/t)²/2σ²) (about 1.4 candidates per sample).
    """
    size = _check_arguments(shape, generator)
    params = rational_variance(sigma)

    def propose(m: int) -> tuple[Tensor, Tensor]:
        y = _discrete_laplace(m, params.t, generator)
        return y, _bernoulli_exp(*_acceptance_exponent(y.abs(), params), params.d, generator)

    return _rejection_sample(size.numel(), propose, generator.device).reshape(size)


def _rejection_sample(
    n: int, propose: Callable[[int], tuple[Tensor, Tensor]], device: torch.device
) -> Tensor:
    """n accepted draws: ``propose(m)`` returns m candidates and which of them are accepted.

    Asks for 1.6 times the shortfall each round (both samplers here accept about 60-75% of their
    candidates, the discrete Gaussian about 45% for σ < 1), so a batch takes a few rounds. The
    accepted draws are i.i.d., and which of them are kept depends only on their position.
    """
    out = torch.empty(n, dtype=torch.int64, device=device)
    filled = 0
    while filled < n:
        candidates, accepted = propose(64 + (n - filled) * 8 // 5)
        take = candidates[accepted][: n - filled]
        out[filled : filled + take.numel()] = take
        filled += take.numel()
    return out


def _acceptance_exponent(x: Tensor, params: RationalVariance) -> tuple[Tensor, Tensor]:
    """(k, r) with (b·x - c)² / d = k + r/d, 0 ≤ r < d, for x = |Y| ≥ 0, exactly.

    int64 arithmetic when |b·x - c| ≤ 2³¹; Python integers otherwise, i.e. for |Y| beyond about
    2¹¹σ²/t, which DLap(t) proposes with probability about exp(-2¹¹σ²/t²) (below e⁻²⁰ for
    σ ≥ 0.1, e⁻⁵⁰⁰ for σ ≥ 1). k is capped at 2⁶²: passing 2⁶² coins of probability e⁻¹ in a row
    has probability exp(-2⁶²), so the cap changes nothing observable.
    """
    c, b, d = params.c, params.b, params.d
    small = x <= (_SMALL_U + c) // b
    u = torch.where(small, x, 0) * b - c
    square = u * u
    k, r = square // d, square % d
    for i in (~small).nonzero().flatten().tolist():
        big_k, big_r = divmod((b * int(x[i]) - c) ** 2, d)
        k[i], r[i] = min(big_k, _TWO_62), big_r
    return k, r


def _discrete_laplace(n: int, t: int, generator: torch.Generator) -> Tensor:
    """n draws of DLap(t), P[Y = y] ∝ exp(-|y|/t): CKS 2020 Algorithm 2 with s = 1.

    U uniform on {0..t-1} kept with probability exp(-U/t), plus t·V with V geometric (the number
    of Bernoulli(e⁻¹) successes before the first failure); a random sign, rejecting "-0".
    """

    def propose(m: int) -> tuple[Tensor, Tensor]:
        u = uniform_below(t, m, generator)
        keep = _bernoulli_exp_fraction(u, t, generator)
        x = u + t * _geometric(keep, generator)
        negative = _coin(1, 2, m, generator)
        return torch.where(negative, -x, x), keep & ~(negative & (x == 0))

    return _rejection_sample(n, propose, generator.device)


def _geometric(mask: Tensor, generator: torch.Generator) -> Tensor:
    """Where ``mask``: the number of Bernoulli(e⁻¹) successes before the first failure; else 0."""
    count = torch.zeros(mask.shape, dtype=torch.int64, device=mask.device)
    going = mask.nonzero().flatten()
    while going.numel():
        going = going[_bernoulli_exp_minus_one(going.numel(), generator)]
        count[going] += 1
    return count


def _bernoulli_exp(k: Tensor, r: Tensor, d: int, generator: torch.Generator) -> Tensor:
    """Bernoulli(exp(-(k + r/d))) per entry, 0 ≤ r < d: CKS 2020 Algorithm 1 for γ > 1.

    k coins of Bernoulli(e⁻¹), stopping at the first failure, then one Bernoulli(exp(-r/d)).
    """
    alive = torch.ones(k.shape, dtype=torch.bool, device=k.device)
    remaining = k.clone()
    pending = (remaining > 0).nonzero().flatten()
    while pending.numel():
        ok = _bernoulli_exp_minus_one(pending.numel(), generator)
        alive[pending[~ok]] = False
        remaining[pending] -= 1
        pending = pending[ok & (remaining[pending] > 0)]
    survivors = alive.nonzero().flatten()
    alive[survivors] = _bernoulli_exp_fraction(r[survivors], d, generator)
    return alive


def _bernoulli_exp_fraction(
    r: Tensor | None, d: int, generator: torch.Generator, n: int = 0, first: int = 1
) -> Tensor:
    """Bernoulli(exp(-γ)) per entry for γ = r/d ∈ [0, 1] (``r=None``: γ = 1 for ``n`` entries).

    CKS 2020 Algorithm 1: K ← 1; while Bernoulli(γ/K): K ← K + 1; return K odd. All entries
    still looping share K, so each round is one vectorized coin Bernoulli(r/(d·K)). ``first``
    resumes the loop at K = first for entries that already passed the coins before it.
    """
    if r is None:
        r = torch.ones(n, dtype=torch.int64, device=generator.device)
    odd = torch.empty(r.shape, dtype=torch.bool, device=r.device)
    active = torch.arange(r.numel(), device=r.device)
    k = first
    while active.numel():
        if d * k <= _TWO_62:
            coin = _coin(r[active], d * k, active.numel(), generator)
        else:  # never in practice: needs thousands of consecutive successes
            coin = _coin(r[active], d, active.numel(), generator)
            coin &= _coin(1, k, active.numel(), generator)
        odd[active[~coin]] = k % 2 == 1
        active = active[coin]
        k += 1
    return odd


_ROUNDS_PER_DRAW = 18
_FACTORIAL = math.factorial(_ROUNDS_PER_DRAW)
_SURVIVAL = [_FACTORIAL // math.factorial(k) for k in range(_ROUNDS_PER_DRAW, 0, -1)]


def _bernoulli_exp_minus_one(n: int, generator: torch.Generator) -> Tensor:
    """n draws of Bernoulli(e⁻¹): Algorithm 1 with γ = 1, its first 18 coins settled by one draw.

    The loop stops at the first failing coin K of Bernoulli(1/1), Bernoulli(1/2), ..., and
    P[K > k] = 1/k! = P[N < 18!/k!] for N uniform on [0, 18!); these events are nested, so one N
    fixes K whenever K ≤ 18. The rest (probability 1/18!) resume the coin loop at K = 19.
    """
    draw = uniform_below(_FACTORIAL, n, generator)
    survival = torch.tensor(_SURVIVAL, device=draw.device)
    passed = _ROUNDS_PER_DRAW - torch.searchsorted(survival, draw, right=True)
    odd = passed % 2 == 0  # K = passed + 1
    tail = (passed == _ROUNDS_PER_DRAW).nonzero().flatten()
    if tail.numel():
        odd[tail] = _bernoulli_exp_fraction(
            None, 1, generator, n=tail.numel(), first=_ROUNDS_PER_DRAW + 1
        )
    return odd


def _coin(numerator: Tensor | int, bound: int, n: int, generator: torch.Generator) -> Tensor:
    """n exact Bernoulli(numerator/bound) coins, 0 ≤ numerator ≤ bound ≤ 2⁶²: [N < numerator·q]
    for N uniform on [0, q·bound), q = ⌊2⁶²/bound⌋ (the same draw as ``uniform_below``)."""
    scale = _TWO_62 // bound
    return _draw_below(scale * bound, n, generator) < numerator * scale


def uniform_below(bound: int, n: int, generator: torch.Generator) -> Tensor:
    """n int64 integers exactly uniform on [0, bound), 1 ≤ bound ≤ 2⁶², on ``generator``'s device.

    ``torch.randint(0, bound)`` is not exact for a bound that is not a power of two (see
    ``_draw_below``); every exact sampler in veil.privacy draws its integers here.
    """
    scale = _TWO_62 // bound
    return _draw_below(scale * bound, n, generator) // scale


def _draw_below(limit: int, n: int, generator: torch.Generator) -> Tensor:
    """n integers exactly uniform on [0, limit), for 2⁶¹ < limit ≤ 2⁶².

    ``torch.randint`` reduces a 64-bit word modulo the range, which is unbiased only for a
    power-of-two range (for others it skews by up to range/2⁶⁴, and for ranges below 2²⁸ it reduces
    a 32-bit word): so draw on [0, 2⁶²) and redraw the values at or above ``limit``.
    """
    device = generator.device
    draw = torch.randint(0, _TWO_62, (n,), generator=generator, device=device)
    if limit < _TWO_62 and bool((draw >= limit).any()):
        redraw = (draw >= limit).nonzero().flatten()
        while redraw.numel():
            draw[redraw] = torch.randint(
                0, _TWO_62, (redraw.numel(),), generator=generator, device=device
            )
            redraw = redraw[draw[redraw] >= limit]
    return draw


def _check_arguments(shape: Sequence[int] | int, generator: torch.Generator) -> torch.Size:
    dims = [shape] if isinstance(shape, int) else list(shape)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in dims):
        raise ConfigError(f"shape must be non-negative integers (got {shape!r})")
    if not isinstance(generator, torch.Generator):
        raise ConfigError(
            "generator must be a torch.Generator from veil.randomness.noise_generator() "
            f"(got {type(generator).__name__})"
        )
    return torch.Size(dims)


def _check_sigma(sigma: float) -> None:
    low, high = SIGMA_RANGE
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise ConfigError(f"sigma must be a number in [{low}, {high:g}] (got {sigma!r})")
    if not low <= sigma <= high:
        why = (
            f"below {low} the noise is almost surely 0; use a finer integer scale for the data"
            if sigma < low
            else "rescale the data to a coarser integer scale"
        )
        raise ConfigError(f"sigma must be in [{low}, {high:g}] (got {sigma}): {why}")
