"""`SharedTensor`: a secret-shared array with a torch-like API, whatever the sharing scheme.

A party holds one *component* array per share it owns: one for two-party additive sharing
(`veil.mpc.sharing`, x = x₀ + x₁), two for three-party replicated sharing
(`veil.mpc.replicated`, party i holds (xᵢ, xᵢ₊₁) of x = x₀ + x₁ + x₂). Linear operations
(``+``, ``-``, indexing, transposing, ``sum``) act on every component locally, with no message;
adding a public value changes only the components that stand for x₀. Products (``*``, ``@``,
`dot`) and truncation ask the scheme (``tensor.protocol``), which talks to the other parties.

Fixed point is tracked per tensor: ``frac_bits`` is 0 for integers and the protocol's ``f`` for
reals. A product carries the sum of its factors' fractional bits and is truncated back to ``f``
in the same call, as SecureML and ABY3 do.

>>> w = protocol.share(owner=0, value=weights)      # every party calls it; party 0 gives the value
>>> z = x @ w + 0.5                                 # one round (Beaver or replicated product)
>>> z.reveal()                                      # every party learns z
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from veil.errors import ConfigError
from veil.mpc.ring import encode

if TYPE_CHECKING:
    from veil.mpc.sharing import ArithmeticProtocol

__all__ = ["DataMaskView", "SharedTensor", "concatenate"]

# Shares wrap around modulo 2^64 by design; numpy warns about that only for 0-d results.
_RING_ARITHMETIC = np.errstate(over="ignore")


@dataclass(frozen=True)
class DataMaskView:
    """What a tensor knows of the one-time mask of its data (`veil.mpc.data_mask`): the opened
    X − M and this party's share of M, for the rows ``rows`` of the masked matrix (``None``:
    all of it), transposed or not."""

    opened: np.ndarray
    share: np.ndarray
    rows: tuple[int, ...] | None = None
    transposed: bool = False


class SharedTensor:
    """One party's view of a secret-shared array (see the module docstring). ``mask`` is set
    on a masked data matrix and on the row batches and transposes taken from it."""

    __slots__ = ("frac_bits", "mask", "protocol", "shares")
    __array_ufunc__ = None  # numpy must hand ``array + shared`` over to ``shared.__radd__``

    def __init__(
        self,
        protocol: ArithmeticProtocol,
        shares: tuple[np.ndarray, ...],
        frac_bits: int,
        mask: DataMaskView | None = None,
    ) -> None:
        self.protocol, self.shares, self.frac_bits = protocol, tuple(shares), frac_bits
        self.mask = mask

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the shared array."""
        return self.shares[0].shape

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return self.shares[0].ndim

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"SharedTensor(shape={self.shape}, frac_bits={self.frac_bits}, party={self.party})"

    @property
    def party(self) -> int:
        """The index of the party holding this view."""
        return self.protocol.party.index

    @_RING_ARITHMETIC
    def map_shares(self, function) -> SharedTensor:
        """Apply a linear, element-moving ``function`` to every component (local)."""
        return SharedTensor(self.protocol, tuple(function(s) for s in self.shares), self.frac_bits)

    def __getitem__(self, index: Any) -> SharedTensor:
        taken = self.map_shares(lambda s: s[index])
        mask = self.mask
        if mask is not None and mask.rows is None and _is_row_list(index):
            rows = np.arange(self.shape[0])[index]  # negative indices made positive
            taken.mask = DataMaskView(mask.opened[rows], mask.share[rows], tuple(rows.tolist()))
        return taken

    @property
    def T(self) -> SharedTensor:
        """The transpose."""
        transposed = self.map_shares(lambda s: s.T)
        mask = self.mask
        if mask is not None and mask.rows is not None:
            transposed.mask = DataMaskView(
                mask.opened.T, mask.share.T, mask.rows, not mask.transposed
            )
        return transposed

    def reshape(self, *shape: int) -> SharedTensor:
        """The same elements in another shape."""
        return self.map_shares(lambda s: s.reshape(*shape))

    def sum(self, axis: int | None = None, keepdims: bool = False) -> SharedTensor:
        """Sum over ``axis`` (all axes by default); local."""
        return self.map_shares(lambda s: s.sum(axis=axis, keepdims=keepdims, dtype=np.uint64))

    def __neg__(self) -> SharedTensor:
        return self.map_shares(np.negative)

    @_RING_ARITHMETIC
    def __add__(self, other: SharedTensor | np.ndarray | float) -> SharedTensor:
        if isinstance(other, SharedTensor):
            a, b = _same_scale(self, other)
            shares = tuple(x + y for x, y in zip(a.shares, b.shares, strict=True))
            return SharedTensor(self.protocol, shares, a.frac_bits)
        public = encode(other, self.frac_bits)
        owned = self.protocol.public_components
        shares = tuple(
            s + public if own else s + np.zeros_like(public)
            for s, own in zip(self.shares, owned, strict=True)
        )
        return SharedTensor(self.protocol, shares, self.frac_bits)

    __radd__ = __add__

    def __sub__(self, other: SharedTensor | np.ndarray | float) -> SharedTensor:
        return self + (-other)

    def __rsub__(self, other: np.ndarray | float) -> SharedTensor:
        return (-self) + other

    def __mul__(self, other: SharedTensor | np.ndarray | float) -> SharedTensor:
        """Element-wise product: shared × shared is one round of the protocol; shared × public
        is local (integers) or local plus a truncation (reals)."""
        if isinstance(other, SharedTensor):
            return self.protocol.multiply(self, other, "mul")
        return self._scale(other, np.multiply)

    __rmul__ = __mul__

    def __matmul__(self, other: SharedTensor | np.ndarray) -> SharedTensor:
        if isinstance(other, SharedTensor):
            return self.protocol.multiply(self, other, "matmul")
        return self._scale(other, np.matmul)

    def __rmatmul__(self, other: np.ndarray) -> SharedTensor:
        return self._scale(other, lambda s, p: np.matmul(p, s))

    def mul(self, other: SharedTensor, halvings: int = 0) -> SharedTensor:
        """``self * other / 2^halvings`` for two real tensors: the division by a power of two
        rides on the product's truncation, so it costs no extra round."""
        return self.protocol.multiply(self, other, "mul", halvings)

    def matmul(self, other: SharedTensor, halvings: int = 0) -> SharedTensor:
        """``self @ other / 2^halvings`` for two real tensors (see `mul`)."""
        return self.protocol.multiply(self, other, "matmul", halvings)

    def dot(self, other: SharedTensor) -> SharedTensor:
        """Inner product of two vectors (or vector-matrix product), as ``self @ other``."""
        return self @ other

    @_RING_ARITHMETIC
    def _scale(self, public: np.ndarray | float, product) -> SharedTensor:
        """``product(share, public)`` on every component; reals are encoded, then truncated."""
        public = np.asarray(public)
        integer = np.issubdtype(public.dtype, np.integer) or public.dtype == bool
        bits = 0 if integer else self.protocol.frac_bits
        factor = public.astype(np.int64).view(np.uint64) if integer else encode(public, bits)
        scaled = self.map_shares(lambda s: product(s, factor))
        scaled.frac_bits = self.frac_bits + bits
        return self.protocol.rescale(scaled)

    def truncate(self, bits: int) -> SharedTensor:
        """Divide by 2^bits (probabilistic truncation of the protocol)."""
        return self.protocol.truncate(self, bits)

    def reveal(self, to: int | None = None) -> np.ndarray | None:
        """Open the value: to every party (``to=None``), or only to party ``to`` (the others
        get ``None``). Reals come back as float64, integers as int64."""
        return self.protocol.reveal(self, to)


def _is_row_list(index: Any) -> bool:
    """Whether ``index`` picks whole rows by a list or 1-d array of integers (not booleans,
    which numpy reads as a mask)."""
    if not isinstance(index, list | np.ndarray):
        return False
    array = np.asarray(index)
    return array.ndim == 1 and array.size > 0 and np.issubdtype(array.dtype, np.integer)


def _same_scale(a: SharedTensor, b: SharedTensor) -> tuple[SharedTensor, SharedTensor]:
    """``a`` and ``b`` at one fixed-point scale (an integer tensor is lifted by a shift)."""
    if a.frac_bits == b.frac_bits:
        return a, b
    if min(a.frac_bits, b.frac_bits) != 0:
        raise ConfigError(
            f"cannot add fixed-point tensors of {a.frac_bits} and {b.frac_bits} fractional bits"
        )
    low, high = (a, b) if a.frac_bits == 0 else (b, a)
    lifted = low.map_shares(lambda s: s << np.uint64(high.frac_bits))
    lifted.frac_bits = high.frac_bits
    return (lifted, high) if low is a else (high, lifted)


def concatenate(parts: list[SharedTensor], axis: int = 0) -> SharedTensor:
    """Join shared tensors of one protocol and scale along ``axis`` (local)."""
    first = parts[0]
    if any(p.frac_bits != first.frac_bits or p.protocol is not first.protocol for p in parts):
        raise ConfigError("concatenate needs tensors of one protocol and one fixed-point scale")
    shares = tuple(
        np.concatenate([p.shares[k] for p in parts], axis=axis) for k in range(len(first.shares))
    )
    return SharedTensor(first.protocol, shares, first.frac_bits)
