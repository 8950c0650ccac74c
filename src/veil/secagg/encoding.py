"""From float updates to Z_{2^b} and back: clip, scale, unbiased stochastic rounding, wrap.

A client's update x (L2 norm clipped to C) becomes round(s·x) + z mod 2^b, where ``round`` picks
⌊v⌋ or ⌈v⌉ with probabilities making E[round(v)] = v, and z is optional integer noise
(distributed DP). The server reads the ring sum as a signed integer and divides by s.

Headroom: with at most n clients, each coordinate of the true sum lies in [−n(Cs+1), n(Cs+1)]
and the summed noise within z_max standard deviations, so s is the largest scale with
n(Cs+1) + z_max·σ_sum < 2^(b−1): the sum cannot wrap (for the noise, except with probability
below d·2·Φ(−z_max) ≈ d·1e-15).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from veil.errors import ConfigError
from veil.secagg.prg import ring_dtype

TAIL_STDS = 8.0  # noise headroom in standard deviations


@dataclass(frozen=True)
class RingEncoding:
    """How floats map to Z_{2^bits}: clip to ``clip_norm``, multiply by ``scale``, round."""

    bits: int
    clip_norm: float
    scale: float

    def sensitivity(self, length: int) -> float:
        """L2 bound of one client's rounded vector of length d: C·s + √d (rounding moves each
        coordinate by less than 1)."""
        return self.clip_norm * self.scale + math.sqrt(length)


def choose_encoding(
    bits: int,
    clip_norm: float,
    max_clients: int,
    length: int,
    noise_to_sensitivity: float = 0.0,
    max_scale: float = math.inf,
) -> RingEncoding:
    """The largest scale s for which ``max_clients`` clipped, rounded updates plus noise of
    std ``noise_to_sensitivity``·(Cs + √d) in total cannot wrap around 2^(bits−1), at most
    ``max_scale`` (finer is pointless once the noise dwarfs the rounding). Refuses
    scales so coarse that C·s < √d (rounding error above a norm-C vector's RMS coordinate)."""
    ring_dtype(bits)
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ConfigError(f"clip_norm must be > 0 (got {clip_norm})")
    if max_clients < 1 or length < 1:
        raise ConfigError("a secure sum needs at least one client and one coordinate")
    half = 2.0 ** (bits - 1) - 1
    noise = TAIL_STDS * noise_to_sensitivity
    room = half - max_clients - noise * math.sqrt(length)
    scale = min(room / (clip_norm * (max_clients + noise)), max_scale)
    if scale * clip_norm < math.sqrt(length):  # coarser than a norm-C vector's RMS coordinate
        shortfall = math.sqrt(length) * clip_norm * (max_clients + noise) / max(room, 1.0)
        needed = bits + max(1, math.ceil(math.log2(max(2.0, shortfall))))
        raise ConfigError(
            f"bits = {bits} leave no room to quantize {length} coordinates for {max_clients} "
            f"clients (clip norm {clip_norm:g}); use bits ≥ {min(needed, 64)}"
        )
    return RingEncoding(bits, clip_norm, scale)


def clip_rows(x: Tensor, clip_norm: float) -> Tensor:
    """Scale each row to L2 norm at most ``clip_norm``."""
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return x * torch.clamp(clip_norm / norms.clamp_min(1e-30), max=1.0)


def stochastic_round(x: Tensor, generator: torch.Generator) -> Tensor:
    """Unbiased rounding to int64: ⌊x⌋ + Bernoulli(x − ⌊x⌋), so E[result] = x."""
    floor = torch.floor(x)
    up = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) < (x - floor)
    return floor.to(torch.int64) + up.to(torch.int64)


def to_ring(
    x: Tensor, encoding: RingEncoding, generator: torch.Generator, noise: Tensor | None = None
) -> np.ndarray:
    """Rows of float64 ``x`` → clipped, scaled, rounded, plus integer ``noise``, in Z_{2^b}."""
    scaled = clip_rows(x.double(), encoding.clip_norm) * encoding.scale
    integers = stochastic_round(scaled, generator)
    if noise is not None:
        integers = integers + noise
    dtype = ring_dtype(encoding.bits)
    ring = integers.cpu().numpy().astype(np.int64).view(np.uint64)  # two's complement
    ring = ring & np.uint64((1 << encoding.bits) - 1) if encoding.bits < 64 else ring
    return ring.astype(dtype)


def from_ring(total: np.ndarray, encoding: RingEncoding) -> Tensor:
    """A ring sum read as signed integers in [−2^(b−1), 2^(b−1)), divided by the scale."""
    values = (
        total.astype(np.uint64).astype(np.int64) if encoding.bits < 64 else total.view(np.int64)
    )
    if encoding.bits < 64:
        values = np.where(values >= 1 << (encoding.bits - 1), values - (1 << encoding.bits), values)
    return torch.from_numpy(values.astype(np.float64) / encoding.scale)
