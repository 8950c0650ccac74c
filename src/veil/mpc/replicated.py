"""Three-party replicated secret sharing over Z_{2^64} (ABY3, Mohassel & Rindal 2018).

x = x₀ + x₁ + x₂ mod 2^64 and party i holds the pair (xᵢ, xᵢ₊₁) (indices mod 3): any two
parties can open x, any single party sees two uniformly random values. Honest majority,
semi-honest: no party colludes with another. No dealer and no triples are needed.

- **Product** (Araki et al. 2016, used by ABY3 §2.3): party i computes, locally,
  zᵢ = xᵢyᵢ + xᵢyᵢ₊₁ + xᵢ₊₁yᵢ + αᵢ, a three-out-of-three sharing of x·y (or x@y, with matrix
  products), where α₀ + α₁ + α₂ = 0 comes from pseudo-random keys each pair of parties agreed
  on once (αᵢ = F(kᵢ) − F(kᵢ₊₁)). One round re-shares it: party i sends zᵢ to party i − 1.
- **Truncation** (ABY3 §5.1.1, Π_trunc1): parties 0 and 1 hold a two-out-of-two sharing
  (x₀ + x₁ at party 0 and x₂ at party 1; after a product, z₀ and z₁ + z₂ once party 2 has sent
  z₂), truncate it with the SecureML rule (`veil.mpc.truncation`), and re-share with a value r
  that parties 1 and 2 draw from their common key: y = (y₀, y₁ − r, r). A product with
  truncation costs two rounds; truncation alone, one.
"""

from __future__ import annotations

import numpy as np

from veil.errors import ConfigError
from veil.mpc.beaver import product
from veil.mpc.party import Party
from veil.mpc.ring import RingGenerator
from veil.mpc.sharing import ArithmeticProtocol
from veil.mpc.truncation import truncate_pair_share

__all__ = ["ReplicatedProtocol"]

_ZERO_STREAM, _TRUNCATION_STREAM = 0, 1


class ReplicatedProtocol(ArithmeticProtocol):
    """Party ``party.index``'s side of three-party replicated sharing (see the module docstring).

    Construction is itself one round: each party draws a key kᵢ and gives it to party i − 1,
    so that party i holds kᵢ and kᵢ₊₁.
    """

    def __init__(self, party: Party, frac_bits: int) -> None:
        if party.num_parties != 3:
            raise ConfigError(f"replicated sharing is for 3 parties (got {party.num_parties})")
        super().__init__(party, frac_bits)
        i = party.index
        self.next, self.previous = (i + 1) % 3, (i - 1) % 3
        self.public_components = (i == 0, i == 2)  # x₀ is party 0's first, party 2's second
        own = np.frombuffer(RingGenerator().bytes(16), np.uint8)
        with party.operation("setup"):
            theirs = party.exchange({self.previous: own}, {self.next: ((16,), np.uint8)})
        keys = (own.tobytes(), theirs[self.next].tobytes())  # (kᵢ, kᵢ₊₁)
        self._zero = tuple(RingGenerator(k, _ZERO_STREAM) for k in keys)
        self._common = RingGenerator(keys[1], _TRUNCATION_STREAM)  # kᵢ₊₁: shared with i + 1
        self._common_previous = RingGenerator(keys[0], _TRUNCATION_STREAM)  # kᵢ: with i − 1

    def zero_share(self, shape: tuple[int, ...]) -> np.ndarray:
        """αᵢ of a fresh three-out-of-three sharing of zero (no message)."""
        return self._zero[0].ring(shape) - self._zero[1].ring(shape)

    def _share_ring(self, owners, ring):
        index, outgoing, parts = self.party.index, {}, None
        if index in owners:
            x1, x2 = self.generator.ring(ring.shape), self.generator.ring(ring.shape)
            parts = (ring - x1 - x2, x1, x2)
            outgoing = {p: np.stack([parts[p], parts[(p + 1) % 3]]) for p in self.party.peers}
        expected = {o: ((2, *shape), np.uint64) for o, shape in owners.items() if o != index}
        received = self.party.exchange(outgoing, expected)
        return {
            o: (parts[index], parts[(index + 1) % 3]) if o == index else tuple(received[o])
            for o in owners
        }

    def _open(self, shares, to):
        # Party i lacks xᵢ₊₂, which is the first component of party i + 2 = i − 1.
        first = shares[0]
        outgoing = {self.next: first} if to in (None, self.next) else {}
        learns = to in (None, self.party.index)
        expected = {self.previous: (first.shape, np.uint64)} if learns else {}
        received = self.party.exchange(outgoing, expected)
        return shares[0] + shares[1] + received[self.previous] if learns else None

    def _multiply(self, a, b, kind, shift):
        (x, x_next), (y, y_next) = a, b
        z = product(kind, x, y) + product(kind, x, y_next) + product(kind, x_next, y)
        z = z + self.zero_share(z.shape)
        if shift:
            return self._truncate_three_of_three(z, shift)
        received = self.party.exchange({self.previous: z}, {self.next: (z.shape, np.uint64)})
        return z, received[self.next]

    def _truncate(self, shares, bits):
        i = self.party.index
        pair = {0: shares[0] + shares[1], 1: shares[1], 2: None}[i]  # x₀ + x₁ | x₂
        return self._reshare_truncated(pair, bits, shares[0].shape)

    def _truncate_three_of_three(self, z: np.ndarray, bits: int) -> tuple[np.ndarray, ...]:
        """Truncate a three-out-of-three sharing: party 2 hands z₂ to party 1, then Π_trunc1."""
        i = self.party.index
        outgoing = {1: z} if i == 2 else {}
        expected = {2: (z.shape, np.uint64)} if i == 1 else {}
        received = self.party.exchange(outgoing, expected)
        pair = {0: z, 1: z + received.get(2, 0), 2: None}[i]
        return self._reshare_truncated(pair, bits, z.shape)

    def _reshare_truncated(self, pair: np.ndarray | None, bits: int, shape) -> tuple:
        """From a two-out-of-two sharing between parties 0 and 1 to a replicated sharing of
        its truncation: (y₀, y₁ − r, r), with r from the key parties 1 and 2 share."""
        i = self.party.index
        if i == 0:
            y0 = truncate_pair_share(pair, bits, 0)
            received = self.party.exchange({2: y0}, {1: (shape, np.uint64)})
            return y0, received[1]
        if i == 1:
            r = self._common.ring(shape)  # k₂, shared with party 2
            y1 = truncate_pair_share(pair, bits, 1) - r
            self.party.exchange({0: y1}, {})
            return y1, r
        r = self._common_previous.ring(shape)  # k₂, shared with party 1
        received = self.party.exchange({}, {0: (shape, np.uint64)})
        return r, received[0]

    def additive_pair(self, tensor):
        return {0: tensor.shares[0] + tensor.shares[1], 1: tensor.shares[1], 2: None}[
            self.party.index
        ]
