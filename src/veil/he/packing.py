"""Quantize and pack several values into one plaintext slot, BatchCrypt-style.

Zhang et al. 2020 ("BatchCrypt: Efficient Homomorphic Encryption for Cross-Silo Federated
Learning", USENIX ATC): clip each value to [−α, α], quantize it to a signed b-bit integer by
unbiased stochastic rounding, shift it to u ∈ [0, 2^b − 2] (offset encoding), and place L such
lanes side by side in one plaintext integer, each lane w = b + h bits wide:

    slot = Σ_j u_j · 2^(w·j),   h = ⌈log2 n_max⌉ padding bits.

Adding n ≤ n_max slots adds lane by lane without carries, because every lane sum is at most
n·(2^b − 2) < 2^w; the whole slot stays below 2^(w·L) ≤ 2^(slot_bits). Overflow is therefore
impossible by construction as long as at most n_max ciphertexts are summed, which the
aggregator enforces. Decoding subtracts n·(2^(b−1) − 1) per lane and divides by the scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from veil.errors import ConfigError


@dataclass(frozen=True)
class PackingLayout:
    """``lanes`` values of ``value_bits`` bits in lanes of ``lane_bits``; ≤ ``max_clients``.
    A value x ∈ [−clip, clip] becomes round(x·scale) ∈ ±(2^(b−1) − 1) minus room for noise."""

    value_bits: int
    lane_bits: int
    lanes: int
    max_clients: int
    clip: float
    scale: float

    @property
    def offset(self) -> int:
        return 2 ** (self.value_bits - 1) - 1


def choose_layout(
    slot_bits: int, max_clients: int, clip: float, value_bits: int = 16, noise_room: float = 0.0
) -> PackingLayout:
    """As many ``value_bits``-bit lanes as fit in ``slot_bits`` with headroom for
    ``max_clients`` summands; ``noise_room`` integer units of each lane are kept free for a
    client's DP noise (the scale shrinks accordingly)."""
    if not (math.isfinite(clip) and clip > 0):
        raise ConfigError(f"clip must be > 0 (got {clip})")
    if not 2 <= value_bits <= 32:
        raise ConfigError(f"value_bits must be in [2, 32] (got {value_bits})")
    if max_clients < 1:
        raise ConfigError(f"max_clients must be ≥ 1 (got {max_clients})")
    lane_bits = value_bits + max(1, math.ceil(math.log2(max_clients)))
    lanes = slot_bits // lane_bits
    if lanes < 1:
        raise ConfigError(
            f"a {slot_bits}-bit slot cannot hold one {value_bits}-bit value with headroom for "
            f"{max_clients} clients ({lane_bits} bits): lower value_bits or max_clients"
        )
    room = 2 ** (value_bits - 1) - 1 - noise_room
    if room < 1:
        raise ConfigError(
            f"value_bits = {value_bits} leave no room for noise of {noise_room:.3g} units: "
            "raise value_bits"
        )
    max_clients = 2 ** (lane_bits - value_bits)
    return PackingLayout(value_bits, lane_bits, lanes, max_clients, clip, room / clip)


def quantize(x: np.ndarray, layout: PackingLayout, rng: np.random.Generator) -> np.ndarray:
    """Clip to [−α, α], scale, round stochastically (unbiased), offset: int64 in [0, 2^b − 2]."""
    scaled = np.clip(np.asarray(x, np.float64), -layout.clip, layout.clip) * layout.scale
    floor = np.floor(scaled)
    rounded = floor + (rng.random(scaled.shape) < scaled - floor)
    return np.clip(rounded, -layout.offset, layout.offset).astype(np.int64) + layout.offset


def dequantize(lane_sums: np.ndarray, layout: PackingLayout, count: int) -> np.ndarray:
    """Float sums from lane sums of ``count`` clients' quantized values."""
    return (np.asarray(lane_sums, np.int64) - count * layout.offset) / layout.scale


def pack(values: np.ndarray, layout: PackingLayout, slots: int) -> np.ndarray:
    """int64 lanes → (ciphertexts, slots) int64 slot values (zero-padded); needs
    lanes·lane_bits ≤ 62."""
    if layout.lanes * layout.lane_bits > 62:
        raise ConfigError("int64 packing needs lanes × lane_bits ≤ 62; use pack_big")
    per_ct = slots * layout.lanes
    count = -(-values.size // per_ct) or 1
    padded = np.zeros(count * per_ct, np.int64)
    padded[: values.size] = values
    lanes = padded.reshape(count, slots, layout.lanes)
    shifts = np.arange(layout.lanes, dtype=np.int64) * layout.lane_bits
    return (lanes << shifts).sum(axis=2)


def unpack(slot_values: np.ndarray, layout: PackingLayout, length: int) -> np.ndarray:
    """Inverse of `pack` for summed slots: the first ``length`` lane sums, int64."""
    slots = np.asarray(slot_values, np.int64)[..., None]
    shifts = np.arange(layout.lanes, dtype=np.int64) * layout.lane_bits
    lanes = (slots >> shifts) & ((1 << layout.lane_bits) - 1)
    return lanes.reshape(-1)[:length]


def pack_big(values: np.ndarray, layout: PackingLayout) -> list[int]:
    """int lanes → Python integers of ``lanes`` lanes each (for Paillier's 2048-bit plaintexts)."""
    out = []
    for start in range(0, values.size, layout.lanes):
        chunk = values[start : start + layout.lanes]
        out.append(sum(int(u) << (layout.lane_bits * j) for j, u in enumerate(chunk)))
    return out


def unpack_big(slot_values: list[int], layout: PackingLayout, length: int) -> np.ndarray:
    """Inverse of `pack_big` for summed plaintexts."""
    mask = (1 << layout.lane_bits) - 1
    lanes = [(v >> (layout.lane_bits * j)) & mask for v in slot_values for j in range(layout.lanes)]
    return np.array(lanes[:length], dtype=np.int64)
