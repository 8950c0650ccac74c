"""Correlated OT extension (IKNP; Ishai, Kilian, Nissim & Petrank 2003): millions of OTs from 128.

Garbled comparisons need one OT per input bit of the evaluator: 64 per compared value. Public-key
OT (`veil.mpc.ot`) costs milliseconds each, so 128 of them are run once per session, with the
roles reversed, and every later batch of m OTs costs only symmetric crypto and 16·m bytes:

- Session setup: the *sender* S picks s ∈ {0,1}^128 (its lowest bit set) and receives, by base
  OT, k_i^{s_i} of the *receiver* R's random seed pairs (k_i⁰, k_i¹).
- Extension to m OTs with R's choice bits r: R sends the columns uᶦ = G(k_i⁰) ⊕ G(k_i¹) ⊕ r
  (G is AES-128-CTR; each batch takes the next bytes of the stream); S computes
  qᶦ = G(k_i^{s_i}) ⊕ s_i·uᶦ. Read by rows, q_j = t_j ⊕ r_j·s with t_j the rows of G(k_i⁰),
  which R holds.

That is a *correlated* OT with global offset Δ = s (Asharov, Lindell, Schneider & Zohner 2013):
S gets q_j, R gets q_j ⊕ r_j·Δ. Garbled circuits use it as is: q_j is the garbler's zero label
of the evaluator's j-th input wire and Δ its free-XOR offset, so the evaluator ends up with
exactly the label of its bit and nothing else. Semi-honest security.
"""

from __future__ import annotations

import numpy as np

from veil.errors import ConfigError
from veil.mpc.ot import receive_ot, send_ot
from veil.mpc.party import Party
from veil.mpc.ring import RingGenerator

__all__ = ["CorrelatedOtReceiver", "CorrelatedOtSender", "bit_rows"]

SECURITY_BITS = 128


def _expand(streams: list[RingGenerator], num_bytes: int) -> np.ndarray:
    """The next ``num_bytes`` of each seed's AES-CTR key stream G(kᵢ), ``[128, num_bytes]``
    (both parties draw the same lengths in the same order, so each batch is fresh)."""
    return np.frombuffer(b"".join(s.bytes(num_bytes) for s in streams), np.uint8).reshape(
        len(streams), num_bytes
    )


def bit_rows(columns: np.ndarray, count: int) -> np.ndarray:
    """Transpose 128 packed bit columns (``[128, ⌈m/8⌉]`` uint8) into m rows of 128 bits, as
    ``[m, 2]`` uint64 (bit i of row j is bit j of column i; little-endian bit order).

    Byte j of eight consecutive columns is an 8×8 bit block; each block is transposed inside
    one 64-bit word by three delta swaps (Warren, *Hacker's Delight*, §7-3), so the 128 × m
    bit matrix is never unpacked (16× faster than transposing unpacked bits at m = 4096)."""
    width = columns.shape[1]
    blocks = np.ascontiguousarray(columns.reshape(16, 8, width).transpose(2, 0, 1))
    x = blocks.view(np.uint64)[..., 0]  # [width, 16]: byte r of word (j, g) is column 8g + r
    for shift, mask in _DELTA_SWAPS:
        t = (x ^ (x >> shift)) & mask
        x = x ^ t ^ (t << shift)
    rows = x.view(np.uint8).reshape(width, 16, 8).transpose(0, 2, 1).reshape(8 * width, 16)
    return np.ascontiguousarray(rows[:count]).view(np.uint64)


_DELTA_SWAPS = tuple(
    (np.uint64(shift), np.uint64(mask))
    for shift, mask in ((7, 0x00AA00AA00AA00AA), (14, 0x0000CCCC0000CCCC), (28, 0x00000000F0F0F0F0))
)


class CorrelatedOtSender:
    """S's side: owns Δ and gets the zero labels q_j (see the module docstring)."""

    def __init__(self, party: Party, receiver: int) -> None:
        self.party, self.receiver = party, receiver
        choice = np.unpackbits(np.frombuffer(RingGenerator().bytes(16), np.uint8))
        choice[0] = 1  # Δ's lowest bit: the point-and-permute bit of garbling
        self._choice = choice.astype(np.uint8)
        self.delta = np.packbits(self._choice, bitorder="little").view(np.uint64).copy()
        seeds = receive_ot(party, receiver, self._choice)
        self._streams = [RingGenerator(seed.tobytes()) for seed in seeds]

    def extend(self, count: int) -> np.ndarray:
        """q_j for ``count`` fresh correlated OTs, ``[count, 2]`` uint64."""
        if count < 1:
            raise ConfigError(f"count must be >= 1 (got {count})")
        width = (count + 7) // 8
        with self.party.operation("ot_extension"):
            u = self.party.receive(self.receiver, (SECURITY_BITS, width), np.uint8)
        columns = _expand(self._streams, width) ^ (u * self._choice[:, None])
        return bit_rows(columns, count)


class CorrelatedOtReceiver:
    """R's side: chooses bits and gets q_j ⊕ r_j·Δ (see the module docstring)."""

    def __init__(self, party: Party, sender: int) -> None:
        self.party, self.sender = party, sender
        seeds = np.frombuffer(RingGenerator().bytes(32 * SECURITY_BITS), np.uint8)
        send_ot(party, sender, seeds.reshape(SECURITY_BITS, 2, 16))
        self._zero_streams = [
            RingGenerator(seed.tobytes()) for seed in seeds.reshape(-1, 2, 16)[:, 0]
        ]
        self._one_streams = [
            RingGenerator(seed.tobytes()) for seed in seeds.reshape(-1, 2, 16)[:, 1]
        ]

    def extend(self, choices: np.ndarray) -> np.ndarray:
        """t_j = q_j ⊕ r_j·Δ for 0/1 ``choices`` r, ``[count, 2]`` uint64."""
        choices = np.asarray(choices, np.uint8)
        count, width = len(choices), (len(choices) + 7) // 8
        if count < 1:
            raise ConfigError("choices must not be empty")
        packed = np.packbits(choices, bitorder="little")
        t, other = _expand(self._zero_streams, width), _expand(self._one_streams, width)
        with self.party.operation("ot_extension"):
            self.party.send(self.sender, t ^ other ^ packed)
        return bit_rows(t, count)
