"""Beaver triples (Beaver 1991): correlated randomness that turns a product into one opening.

A triple is (A, B, C) with A, B uniform and C = A·B (element-wise) or C = A@B (a matrix triple,
SecureML §4.2), each additively shared between the two parties. It is made in an *offline*
phase, before the data is known, by one of:

- `TrustedDealer`: a third party draws the triples and hands each party its shares. Cheap
  (only the shares travel); the dealer must not collude with either party.
- `veil.mpc.paillier_triples`: the two parties make them together with Paillier encryption,
  with no one else trusted (slower by orders of magnitude; both costs are reported).

The online phase takes triples in the order it needs them (`TripleSource.take`). A program
announces its needs up front as a `TriplePlan` (how many triples of each signature
``(kind, shape of A, shape of B)``), so the offline phase can make exactly those. A dealer can
also mask the training data once for all its products (`veil.mpc.data_mask`, SecureML §4.2);
`masked_product` is the product of such masked rows.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from veil.errors import ConfigError, ProtocolError
from veil.mpc.data_mask import MaskPlan, MaskStock, OnDemandMasks, deal_masks
from veil.mpc.party import Party
from veil.mpc.ring import RingGenerator

__all__ = [
    "OnDemandDealer",
    "PrecomputedTriples",
    "TriplePlan",
    "TripleSource",
    "TrustedDealer",
    "beaver_product",
    "masked_product",
    "plan_bytes",
    "product",
]

Signature = tuple[str, tuple[int, ...], tuple[int, ...]]
Triple = tuple[np.ndarray, np.ndarray, np.ndarray]
TriplePlan = Counter  # Counter[Signature]: how many triples of each signature


def product(kind: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a * b`` or ``a @ b`` in the ring (uint64 arithmetic wraps modulo 2^64)."""
    if kind == "mul":
        return np.multiply(a, b)
    if kind == "matmul":
        return np.matmul(a, b)
    raise ConfigError(f"a triple's kind is 'mul' or 'matmul' (got {kind!r})")


def result_shape(kind: str, shape_a: tuple[int, ...], shape_b: tuple[int, ...]) -> tuple:
    """The shape of ``product(kind, A, B)`` (`ConfigError` if the shapes do not fit)."""
    try:
        return product(kind, np.empty(shape_a, np.uint64), np.empty(shape_b, np.uint64)).shape
    except ValueError:
        raise ConfigError(f"shapes {shape_a} and {shape_b} do not fit for {kind}") from None


def plan_bytes(plan: TriplePlan) -> int:
    """Bytes of one party's shares of every triple in ``plan`` (8 per ring element)."""
    total = 0
    for (kind, shape_a, shape_b), count in plan.items():
        elements = (
            np.prod(shape_a) + np.prod(shape_b) + np.prod(result_shape(kind, shape_a, shape_b))
        )
        total += 8 * int(elements) * count
    return total


class TripleSource(ABC):
    """Where a party's online phase takes its triples from, and its data mask (a
    `veil.mpc.data_mask.MaskStock` or view) if the offline phase made one."""

    data_masks = None

    @abstractmethod
    def take(self, kind: str, shape_a: tuple[int, ...], shape_b: tuple[int, ...]) -> Triple:
        """This party's shares of the next triple of this signature."""


@dataclass
class PrecomputedTriples(TripleSource):
    """One party's shares of the triples an offline phase made, used up in order."""

    stock: dict[Signature, list[Triple]] = field(default_factory=dict)
    data_masks: MaskStock | None = None
    _used: Counter = field(default_factory=Counter)

    def take(self, kind, shape_a, shape_b) -> Triple:
        signature = (kind, tuple(shape_a), tuple(shape_b))
        made, used = self.stock.get(signature, []), self._used[signature]
        if used >= len(made):
            raise ProtocolError(
                f"out of triples for {kind} {tuple(shape_a)} × {tuple(shape_b)}: the offline "
                f"phase made {len(made)}, the online phase asked for more (plan and program "
                "disagree)"
            )
        self._used[signature] += 1
        triple, made[used] = made[used], None  # a triple is never used twice
        return triple

    def remaining(self) -> int:
        """Triples made but not (yet) used."""
        return sum(len(v) for v in self.stock.values()) - sum(self._used.values())


class TrustedDealer:
    """A trusted third party that makes triples for two parties (see the module docstring)."""

    def __init__(self) -> None:
        self.generator = RingGenerator()

    def triple(self, kind: str, shape_a, shape_b) -> tuple[Triple, Triple]:
        """Both parties' shares of one fresh triple."""
        a, b = self.generator.ring(shape_a), self.generator.ring(shape_b)
        c = product(kind, a, b)
        a0, b0 = self.generator.ring(shape_a), self.generator.ring(shape_b)
        c0 = self.generator.ring(c.shape)
        return (a0, b0, c0), (a - a0, b - b0, c - c0)

    def deal(
        self, plan: TriplePlan, masks: MaskPlan | None = None
    ) -> tuple[PrecomputedTriples, PrecomputedTriples]:
        """The offline phase: every triple of ``plan`` (and the data mask of ``masks``), as
        each party's stock."""
        masked = deal_masks(masks) if masks is not None else (None, None)
        stocks = (
            PrecomputedTriples(data_masks=masked[0]),
            PrecomputedTriples(data_masks=masked[1]),
        )
        for (kind, shape_a, shape_b), count in sorted(plan.items()):
            result_shape(kind, shape_a, shape_b)
            pairs = [self.triple(kind, shape_a, shape_b) for _ in range(count)]
            for party, stock in enumerate(stocks):
                stock.stock[(kind, tuple(shape_a), tuple(shape_b))] = [p[party] for p in pairs]
        return stocks


class OnDemandDealer:
    """A trusted dealer inside one process, making each triple when a party first asks for it.

    For in-process runs and tests, where no plan is known up front: the parties' views
    (`view`) see the same k-th triple of each signature. It also records what was used
    (``used``), which is the plan an offline phase would have to make.
    """

    def __init__(self) -> None:
        self._dealer, self._lock = TrustedDealer(), threading.Lock()
        self._made: dict[Signature, list[tuple[Triple, Triple]]] = {}
        self._viewed: set[int] = set()
        self.used: TriplePlan = Counter()
        self.masks = OnDemandMasks()

    def view(self, party: int) -> TripleSource:
        """Party ``party``'s (0 or 1) triple source (with a data mask); once per party, since a
        second view would hand out the same triples again."""
        with self._lock:
            if party in self._viewed:
                raise ConfigError(
                    f"party {party} already has a view of this dealer; a second would reuse "
                    "its triples (make a new OnDemandDealer per run)"
                )
            self._viewed.add(party)
        return _DealerView(self, party, self.masks.view(party))

    def _get(self, party: int, signature: Signature, index: int) -> Triple:
        with self._lock:
            made = self._made.setdefault(signature, [])
            if index == len(made):
                made.append(self._dealer.triple(*signature))
                self.used[signature] += 1
            return made[index][party]


@dataclass
class _DealerView(TripleSource):
    dealer: OnDemandDealer
    party: int
    data_masks: object = None
    counts: Counter = field(default_factory=Counter)

    def take(self, kind, shape_a, shape_b) -> Triple:
        signature = (kind, tuple(shape_a), tuple(shape_b))
        result_shape(*signature)
        index = self.counts[signature]
        self.counts[signature] += 1
        return self.dealer._get(self.party, signature, index)


@np.errstate(over="ignore")  # shares wrap modulo 2^64 by design
def beaver_product(
    party: Party, peer: int, kind: str, x: np.ndarray, y: np.ndarray, triple: Triple
) -> np.ndarray:
    """This party's share of ``product(kind, x, y)``, using one triple and one round."""
    a, b, c = triple
    masked = np.concatenate([(x - a).ravel(), (y - b).ravel()])
    theirs = party.exchange({peer: masked}, {peer: (masked.shape, np.uint64)})[peer]
    opened = masked + theirs
    e, f = opened[: x.size].reshape(x.shape), opened[x.size :].reshape(y.shape)
    return _share_of_product(party.index, kind, (a, b, c), e, f)


@np.errstate(over="ignore")
def masked_product(
    party: Party, peer: int, mask, y: np.ndarray, b: np.ndarray, c: np.ndarray
) -> np.ndarray:
    """This party's share of X_b @ y for rows X_b of a masked data matrix (``mask``, a
    `veil.mpc.tensor.DataMaskView` with E_b = X_b − M_b opened and this party's M_b), with
    (B, C = M_b @ B) from the dealer: only F = y − B is opened, in one round."""
    mine = y - b
    f = mine + party.exchange({peer: mine}, {peer: (mine.shape, np.uint64)})[peer]
    return _share_of_product(party.index, "matmul", (mask.share, b, c), mask.opened, f)


def _share_of_product(
    index: int, kind: str, triple: Triple, e: np.ndarray, f: np.ndarray
) -> np.ndarray:
    """Party ``index``'s share of x·y from its triple shares (A, B, C) and the opened
    E = x − A, F = y − B: C + E·B + A·F, and E·F at party 0 only."""
    a, b, c = triple
    z = c + product(kind, e, b) + product(kind, a, f)
    return z + product(kind, e, f) if index == 0 else z
