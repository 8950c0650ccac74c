"""Three-party replicated secret sharing over Z_{2^64} (ABY3, Mohassel & Rindal 2018).

x = x₀ + x₁ + x₂ mod 2^64 and party i holds the pair (xᵢ, xᵢ₊₁) (indices mod 3): any two
parties can open x, any single party sees two uniformly random values. Honest majority,
semi-honest: no party colludes with another. No dealer and no triples are needed.

- **Product** (Araki et al. 2016, used by ABY3 §2.3): party i computes, locally,
  zᵢ = xᵢyᵢ + xᵢyᵢ₊₁ + xᵢ₊₁yᵢ + αᵢ, a three-out-of-three sharing of x·y (or x@y, with matrix
  products), where α₀ + α₁ + α₂ = 0 comes from pseudo-random keys each pair of parties agreed
  on once (αᵢ = F(kᵢ) − F(kᵢ₊₁)). One round re-shares it: party i sends zᵢ to party i − 1.
- **Truncation** (ABY3 §5.1.2, Π_trunc2, with the truncation pair dealt by one of the three
  parties, as the helper party deals preprocessing in ASTRA, Chaudhari et al. 2019): party 2
  draws r uniform in Z_{2^64} from its own randomness and hands out a replicated sharing of
  r' = r >> d (arithmetic shift), whose components y₀ and y₂ come from the keys it shares
  with parties 0 and 2 and whose y₁ = r' − y₀ − y₂ it sends. In the same round parties 0 and
  1 open c = z − r to each other from a three-out-of-three sharing of z (party 2 sends
  z₂ − r); then z / 2^d ≈ (c >> d) + 1 + r', with the public part added to the y₁ both of
  them hold. Writing r = 2^d·R + ρ, the result is ⌊(z + 2^d − ρ) / 2^d⌋: z / 2^d rounded
  stochastically (biased by 2^-d of a unit only), and exact when z is a multiple of 2^d (but
  for ρ = 0). One round for a product with truncation, one for a truncation alone
  (re-randomised by a zero sharing first). c is uniform because r is; party 2 receives
  nothing. The result is wrong only if z − r overflows the signed range, which happens with
  probability |z| / 2^64. As with SecureML's local truncation, the party that knows ρ (here
  party 2) would learn which way a value was rounded if that value were later opened.
"""

from __future__ import annotations

import numpy as np

from veil.errors import ConfigError
from veil.mpc.beaver import product
from veil.mpc.party import Party
from veil.mpc.ring import RingGenerator
from veil.mpc.sharing import ArithmeticProtocol

__all__ = ["ReplicatedProtocol"]

_ZERO_STREAM, _TRUNCATION_STREAM = 0, 1
_ONE = np.uint64(1)


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

    def _multiply(self, a, b, kind, shift, mask=None):
        (x, x_next), (y, y_next) = a, b
        z = product(kind, x, y + y_next) + product(kind, x_next, y)  # xᵢyᵢ + xᵢyᵢ₊₁ + xᵢ₊₁yᵢ
        z = z + self.zero_share(z.shape)
        if shift:
            return self._truncate_three_of_three(z, shift)
        received = self.party.exchange({self.previous: z}, {self.next: (z.shape, np.uint64)})
        return z, received[self.next]

    def _truncate(self, shares, bits):
        return self._truncate_three_of_three(shares[0] + self.zero_share(shares[0].shape), bits)

    def _truncate_three_of_three(self, z: np.ndarray, bits: int) -> tuple[np.ndarray, ...]:
        """A replicated sharing of z / 2^bits from party i's zᵢ of z = z₀ + z₁ + z₂, in one
        round: party 2 deals the truncation pair, parties 0 and 1 open z − r (module
        docstring)."""
        i, shape = self.party.index, z.shape
        if i == 2:
            r = self.generator.ring(shape)
            y2 = self._common_previous.ring(shape)  # key k₂, shared with party 1
            y0 = self._common.ring(shape)  # key k₀, shared with party 0
            y1 = _arithmetic_shift(r, bits) - y0 - y2
            message = np.stack([z - r, y1])
            self.party.exchange({0: message, 1: message}, {})
            return y2, y0
        other = 1 - i
        received = self.party.exchange(
            {other: z}, {other: (shape, np.uint64), 2: ((2, *shape), np.uint64)}
        )
        masked_by_party_2, y1 = received[2]
        y1 = y1 + _arithmetic_shift(z + received[other] + masked_by_party_2, bits) + _ONE
        if i == 0:
            return self._common_previous.ring(shape), y1  # y₀ from key k₀
        return y1, self._common.ring(shape)  # y₂ from key k₂

    def additive_pair(self, tensor):
        return {0: tensor.shares[0] + tensor.shares[1], 1: tensor.shares[1], 2: None}[
            self.party.index
        ]


def _arithmetic_shift(ring: np.ndarray, bits: int) -> np.ndarray:
    """⌊x / 2^bits⌋ of the signed value of each ring element, back in the ring."""
    return (ring.view(np.int64) >> np.int64(bits)).view(np.uint64)
