"""A data matrix masked once for all its products (SecureML, Mohassel & Zhang 2017, §4.2).

A Beaver product X_b @ w opens E = X_b − A and F = w − B. When X is fixed and only its row
batches change, SecureML masks the whole matrix once: the dealer draws M (uniform, as big as
X), the parties open E = X − M in one round at the start, and every later product of a batch
X_b (or its transpose) uses the rows M_b of that same mask with a fresh B and C = M_b @ B. Each
step then opens only F (a few dozen values) instead of E and F (about a thousand), and the
dealer sends B and C instead of a whole triple.

Security is that of Beaver triples (`veil.mpc.beaver`): E is uniform because M is, and every
product has its own B, so F is uniform too; M is never used for anything but masking X.

A program announces its masked products up front (`MaskPlan`: the mask's shape, then in order
the rows, the orientation and B's shape of each product); `deal_masks` makes them and each
party's `MaskStock` hands them out in that order, refusing a product the plan does not list.
`OnDemandMasks` does the same inside one process, for tests, without a plan.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from veil.errors import ProtocolError
from veil.mpc.ring import RingGenerator

__all__ = [
    "MaskPlan",
    "MaskStock",
    "MaskedUse",
    "OnDemandMasks",
    "deal_masks",
    "mask_rows",
]


@dataclass(frozen=True)
class MaskedUse:
    """One product of masked rows: ``mask[rows]`` (``.T`` if ``transposed``) @ B of
    ``shape_b``."""

    rows: tuple[int, ...]
    transposed: bool
    shape_b: tuple[int, ...]


@dataclass(frozen=True)
class MaskPlan:
    """The data mask's shape and every masked product a program makes, in order."""

    shape: tuple[int, ...]
    uses: tuple[MaskedUse, ...]

    def bytes_per_party(self) -> int:
        """Bytes of one party's share of the mask and of every (B, C) (8 per ring element)."""
        rows, columns = self.shape
        elements = rows * columns
        for use in self.uses:
            width = int(np.prod(use.shape_b[1:], dtype=np.int64))
            elements += (
                int(np.prod(use.shape_b)) + (columns if use.transposed else len(use.rows)) * width
            )
        return 8 * elements


def mask_rows(mask: np.ndarray, use: MaskedUse) -> np.ndarray:
    """The left factor's mask of ``use``: ``mask[rows]``, transposed if asked."""
    rows = mask[np.asarray(use.rows, dtype=np.int64)]
    return rows.T if use.transposed else rows


@np.errstate(over="ignore")
def _shares_of_use(
    generator: RingGenerator, mask: np.ndarray, use: MaskedUse
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Both parties' shares of (B, C = mask_rows(M, use) @ B) for a fresh B."""
    b = generator.ring(use.shape_b)
    c = np.matmul(mask_rows(mask, use), b)
    b0, c0 = generator.ring(b.shape), generator.ring(c.shape)
    return (b0, c0), (b - b0, c - c0)


@dataclass
class MaskStock:
    """One party's share of the data mask and of each planned product's (B, C), in order."""

    mask: np.ndarray
    uses: list[tuple[MaskedUse, np.ndarray, np.ndarray]] = field(default_factory=list)
    _next: int = 0
    _handed_out: bool = False

    def share(self, shape: tuple[int, ...]) -> np.ndarray:
        """This party's share of M, which must have the shape of the data; once only (two
        matrices masked by one M would open their difference)."""
        if tuple(shape) != self.mask.shape:
            raise ProtocolError(
                f"the dealer masked a {self.mask.shape} matrix, the program has {tuple(shape)}"
            )
        _refuse_second_mask(self._handed_out)
        self._handed_out = True
        return self.mask

    def take(self, use: MaskedUse) -> tuple[np.ndarray, np.ndarray]:
        """This party's shares of (B, C) for the next product, which must be ``use``."""
        if self._next >= len(self.uses) or self.uses[self._next][0] != use:
            raise ProtocolError(
                f"masked product {self._next} is not the one the offline phase planned (plan "
                "and program disagree)"
            )
        _, b, c = self.uses[self._next]
        self.uses[self._next] = (use, None, None)  # never used twice
        self._next += 1
        return b, c


def _refuse_second_mask(already: bool) -> None:
    if already:
        raise ProtocolError(
            "the data mask was already used: masking a second matrix with it would open the "
            "difference of the two"
        )


@np.errstate(over="ignore")
def deal_masks(plan: MaskPlan) -> tuple[MaskStock, MaskStock]:
    """A trusted dealer's offline phase for ``plan``: each party's `MaskStock`."""
    generator = RingGenerator()
    mask = generator.ring(plan.shape)
    first = generator.ring(plan.shape)
    stocks = (MaskStock(first), MaskStock(mask - first))
    for use in plan.uses:
        pair = _shares_of_use(generator, mask, use)
        for party, stock in enumerate(stocks):
            stock.uses.append((use, *pair[party]))
    return stocks


class OnDemandMasks:
    """A dealer inside one process that masks on first request (tests and thread runs): both
    parties' views get the same mask and the same k-th (B, C); ``uses`` records the plan."""

    def __init__(self) -> None:
        self._generator, self._lock = RingGenerator(), threading.Lock()
        self._mask: np.ndarray | None = None
        self._shares: tuple[np.ndarray, np.ndarray] | None = None
        self._made: list[tuple[MaskedUse, tuple]] = []
        self._handed_out: set[int] = set()
        self.uses: list[MaskedUse] = []

    def view(self, party: int) -> _MaskView:
        """Party ``party``'s (0 or 1) source of masks."""
        return _MaskView(self, party)

    @np.errstate(over="ignore")
    def _share(self, party: int, shape: tuple[int, ...]) -> np.ndarray:
        with self._lock:
            if self._mask is None:
                self._mask = self._generator.ring(shape)
                first = self._generator.ring(shape)
                self._shares = (first, self._mask - first)
            if self._mask.shape != tuple(shape):
                raise ProtocolError(f"the data mask is {self._mask.shape}, not {tuple(shape)}")
            _refuse_second_mask(party in self._handed_out)
            self._handed_out.add(party)
            return self._shares[party]

    def _take(self, party: int, index: int, use: MaskedUse) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if self._mask is None:
                raise ProtocolError("a masked product before the data was masked")
            if index == len(self._made):
                self._made.append((use, _shares_of_use(self._generator, self._mask, use)))
                self.uses.append(use)
            planned, pair = self._made[index]
            if planned != use:
                raise ProtocolError(f"the parties disagree on masked product {index}")
            return pair[party]


@dataclass
class _MaskView:
    dealer: OnDemandMasks
    party: int
    count: int = 0

    def share(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.dealer._share(self.party, tuple(shape))

    def take(self, use: MaskedUse) -> tuple[np.ndarray, np.ndarray]:
        pair = self.dealer._take(self.party, self.count, use)
        self.count += 1
        return pair
