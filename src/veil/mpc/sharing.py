"""Two-party additive secret sharing over Z_{2^64} (SecureML, Mohassel & Zhang 2017).

A value x is split as x = x₀ + x₁ mod 2^64 with x₀ uniform: either share alone is uniformly
random and says nothing about x. Addition is local. A product uses a Beaver triple
(A, B, C = A·B or A@B) from the offline phase (`veil.mpc.beaver`): the parties open
E = x − A and F = y − B in one round (both at once, one message each way) and set

    z = C + E·B + A·F + E·F            (the E·F term at party 0 only),

which is x·y because E and F are uniformly masked. Fixed-point products are truncated locally
(`veil.mpc.truncation`). Threat model: semi-honest parties that do not collude (with each
other or with the dealer); a malicious party can change the result without being detected.

`ArithmeticProtocol` is what `veil.mpc.tensor.SharedTensor` needs from any sharing scheme;
`veil.mpc.replicated` is the three-party one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from veil.errors import ConfigError
from veil.mpc.beaver import TripleSource, beaver_product, masked_product
from veil.mpc.data_mask import MaskedUse
from veil.mpc.party import Party
from veil.mpc.ring import RING_BITS, RingGenerator, decode, encode, to_signed
from veil.mpc.tensor import DataMaskView, SharedTensor
from veil.mpc.truncation import truncate_pair_share

__all__ = ["AdditiveProtocol", "ArithmeticProtocol"]

_RING_ARITHMETIC = np.errstate(over="ignore")  # shares wrap modulo 2^64 by design


class ArithmeticProtocol(ABC):
    """A secret-sharing scheme among ``party``'s parties, with ``frac_bits`` fractional bits."""

    public_components: tuple[bool, ...]  # which of my components carry x₀ (public constants)

    def __init__(self, party: Party, frac_bits: int) -> None:
        encode(0.0, frac_bits)  # validates the range of frac_bits
        self.party, self.frac_bits = party, frac_bits
        self.generator = RingGenerator()  # this party's own randomness

    def share(
        self, owner: int, value: np.ndarray | None, shape: tuple[int, ...], integer: bool = False
    ) -> SharedTensor:
        """Secret-share ``owner``'s ``value`` (every party calls this; only the owner passes the
        value, the others pass ``None``). Reals are encoded with ``frac_bits``."""
        return self.share_each({owner: shape}, value, integer)[owner]

    @_RING_ARITHMETIC
    def share_each(
        self,
        shapes: Mapping[int, tuple[int, ...]],
        value: np.ndarray | None,
        integer: bool = False,
    ) -> dict[int, SharedTensor]:
        """Every party in ``shapes`` shares its own ``value`` of the given shape, all in one
        round; ``value`` is this party's (``None`` if it is not an owner)."""
        index, count = self.party.index, self.party.num_parties
        if any(not 0 <= owner < count for owner in shapes):
            raise ConfigError(f"owners must be party indices 0..{count - 1} (got {list(shapes)})")
        bits = 0 if integer else self.frac_bits
        ring = None
        if index in shapes:
            shape = tuple(shapes[index])
            if value is None or np.shape(value) != shape:
                raise ConfigError(
                    f"party {index} must give a value of shape {shape} to share "
                    f"(got {None if value is None else np.shape(value)})"
                )
            ring = encode(value, bits)
        owners = {owner: tuple(shape) for owner, shape in shapes.items()}
        with self.party.operation("share"):
            shares = self._share_ring(owners, ring)
        return {owner: SharedTensor(self, shares[owner], bits) for owner in owners}

    def constant(self, value: np.ndarray | float, integer: bool = False) -> SharedTensor:
        """A public value as a (trivially) shared tensor."""
        bits = 0 if integer else self.frac_bits
        ring = encode(value, bits)
        shares = tuple(ring if own else np.zeros_like(ring) for own in self.public_components)
        return SharedTensor(self, shares, bits)

    @_RING_ARITHMETIC
    def reveal(self, tensor: SharedTensor, to: int | None = None) -> np.ndarray | None:
        """Open ``tensor`` to every party or to party ``to`` only (see `SharedTensor.reveal`)."""
        with self.party.operation("reveal"):
            ring = self._open(tensor.shares, to)
        if ring is None:
            return None
        return decode(ring, tensor.frac_bits) if tensor.frac_bits else to_signed(ring).copy()

    @_RING_ARITHMETIC
    def multiply(
        self, a: SharedTensor, b: SharedTensor, kind: str, halvings: int = 0
    ) -> SharedTensor:
        """``a * b`` (``kind="mul"``) or ``a @ b`` (``"matmul"``), truncated back to
        ``frac_bits`` when both factors are reals, and divided by ``2^halvings`` in the same
        truncation (no extra round)."""
        bits = a.frac_bits + b.frac_bits
        shift = max(0, bits - self.frac_bits)
        if halvings < 0 or (halvings and not shift) or shift + halvings >= RING_BITS - 1:
            raise ConfigError(
                f"a product can be halved only when it is truncated anyway (both factors reals), "
                f"by fewer than {RING_BITS - 1} bits in all (halvings {halvings}, fractional "
                f"bits {a.frac_bits} and {b.frac_bits})"
            )
        with self.party.operation(kind):
            shares = self._multiply(a.shares, b.shares, kind, shift + halvings, a.mask)
        return SharedTensor(self, shares, bits - shift)

    def mask_data(self, tensor: SharedTensor) -> SharedTensor:
        """``tensor`` masked once for all its later products (`veil.mpc.data_mask`), where the
        scheme does so; the tensor itself otherwise."""
        return tensor

    def rescale(self, tensor: SharedTensor) -> SharedTensor:
        """Truncate ``tensor`` back to ``frac_bits`` if it carries more."""
        extra = tensor.frac_bits - self.frac_bits
        return self.truncate(tensor, extra) if extra > 0 else tensor

    @_RING_ARITHMETIC
    def truncate(self, tensor: SharedTensor, bits: int) -> SharedTensor:
        """``tensor / 2^bits``, off by at most one unit in the last place (probabilistic)."""
        if not 0 <= bits <= tensor.frac_bits:
            raise ConfigError(f"can truncate 0..{tensor.frac_bits} bits (got {bits})")
        with self.party.operation("truncate"):
            shares = self._truncate(tensor.shares, bits) if bits else tensor.shares
        return SharedTensor(self, shares, tensor.frac_bits - bits)

    @abstractmethod
    def _share_ring(
        self, owners: dict[int, tuple[int, ...]], ring: np.ndarray | None
    ) -> dict[int, tuple[np.ndarray, ...]]:
        """My components of a sharing of each owner's ring array (``ring`` is mine), in one
        round."""

    @abstractmethod
    def _open(self, shares: tuple[np.ndarray, ...], to: int | None) -> np.ndarray | None:
        """The ring value, at the parties that learn it."""

    @abstractmethod
    def _multiply(self, a, b, kind: str, shift: int, mask=None) -> tuple[np.ndarray, ...]:
        """My components of ``product(a, b) / 2^shift`` (``mask``: the left factor's
        `DataMaskView`, if it has one)."""

    @abstractmethod
    def _truncate(self, shares: tuple[np.ndarray, ...], bits: int) -> tuple[np.ndarray, ...]:
        """My components of ``x / 2^bits``."""

    @abstractmethod
    def additive_pair(self, tensor: SharedTensor) -> np.ndarray | None:
        """My share of ``tensor`` in a two-out-of-two additive sharing between parties 0 and 1
        (the garbler and evaluator of `veil.mpc.conversion`); ``None`` at other parties."""


class AdditiveProtocol(ArithmeticProtocol):
    """Two-party additive sharing with Beaver triples from ``triples`` (SecureML)."""

    public_components = (True,)

    def __init__(self, party: Party, frac_bits: int, triples: TripleSource | None) -> None:
        if party.num_parties != 2:
            raise ConfigError(f"additive sharing here is for 2 parties (got {party.num_parties})")
        super().__init__(party, frac_bits)
        self.public_components = (party.index == 0,)
        self.triples = triples
        self.peer = 1 - party.index

    def _share_ring(self, owners, ring):
        index, peer = self.party.index, self.peer
        mask = self.generator.ring(ring.shape) if index in owners else None
        received = self.party.exchange(
            {peer: mask} if mask is not None else {},
            {peer: (owners[peer], np.uint64)} if peer in owners else {},
        )
        return {o: (ring - mask,) if o == index else (received[o],) for o in owners}

    def _open(self, shares, to):
        (mine,) = shares
        outgoing = {self.peer: mine} if to in (None, self.peer) else {}
        learns = to in (None, self.party.index)
        other = self.party.exchange(
            outgoing, {self.peer: (mine.shape, np.uint64)} if learns else {}
        )
        return mine + other[self.peer] if learns else None

    def _multiply(self, a, b, kind, shift, mask=None):
        if self.triples is None:
            raise ConfigError("this two-party protocol has no triple source for products")
        (x,), (y,) = a, b
        if mask is not None and mask.rows is not None and kind == "matmul":
            use = MaskedUse(mask.rows, mask.transposed, y.shape)
            b_share, c_share = self.triples.data_masks.take(use)
            z = masked_product(self.party, self.peer, mask, y, b_share, c_share)
        else:
            triple = self.triples.take(kind, x.shape, y.shape)
            z = beaver_product(self.party, self.peer, kind, x, y, triple)
        return self._truncate((z,), shift) if shift else (z,)

    @_RING_ARITHMETIC
    def mask_data(self, tensor):
        """SecureML's one-time mask: open X − M (one round) when the triple source carries a
        data mask (a dealer's; Paillier triples do not)."""
        masks = getattr(self.triples, "data_masks", None)
        if masks is None:
            return tensor
        with self.party.operation("mask"):
            share = masks.share(tensor.shape)
            mine = tensor.shares[0] - share
            theirs = self.party.exchange({self.peer: mine}, {self.peer: (mine.shape, np.uint64)})
        opened = DataMaskView(mine + theirs[self.peer], share)
        return SharedTensor(self, tensor.shares, tensor.frac_bits, opened)

    def _truncate(self, shares, bits):
        (mine,) = shares
        return (truncate_pair_share(mine, bits, self.party.index),)

    def additive_pair(self, tensor):
        return tensor.shares[0]
