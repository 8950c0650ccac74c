"""The synthetic fraud data split vertically: a bank and an e-commerce partner.

Vertical federated learning joins *columns* held by different organisations about the same
people. Here a bank holds each of its customers' card-transaction features and the fraud label;
an e-commerce partner holds other features about its own customers (the shipping distance and
behavioural signals). Their customer bases overlap only partly: some customers bank there and
shop at the partner (``num_shared``), some only bank there (``num_bank_only``) and some only shop
at the partner (``num_partner_only``). Neither side knows which ids the other has; private set
intersection (`veil.he.psi`) finds the shared ones.

Generation: `veil.data.make_fraud` with one bank draws every customer's features and label;
the bank keeps `BANK_FEATURES`, the partner `distance_km` and the generic columns (renamed
``partner_signal_j``). Each party's rows are in its own random order, keyed by customer id.

Train/test split: a customer is in the test set when ``SHA-256(salt, id)`` (as a number in
[0, 1)) is below ``test_fraction`` (`split_by_id`), a public rule that both parties apply to
their own rows without talking to each other, so a shared customer is on the same side for both.

Scaling, per party and fitted on that party's *training* rows only: ``log1p`` of the
heavy-tailed non-negative columns (`LOG_FEATURES`), then ``(x - mean) / std``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from veil.data.federation import STD_FLOOR
from veil.data.fraud import TRANSACTION_FEATURES, make_fraud
from veil.errors import check

__all__ = [
    "BANK_FEATURES",
    "LOG_FEATURES",
    "PartyData",
    "VerticalFraud",
    "make_vertical_fraud",
    "split_by_id",
    "standardize",
]

BANK_FEATURES: tuple[str, ...] = tuple(f for f in TRANSACTION_FEATURES if f != "distance_km")
LOG_FEATURES: tuple[str, ...] = ("amount", "velocity_24h", "distance_km", "account_age_days")


@dataclass(frozen=True)
class PartyData:
    """One party's table: customer ids, scaled features, labels (bank only), split flags.

    Attributes:
        name: ``"bank"`` or ``"partner"``.
        ids: customer ids, one per row, in this party's own order (distinct).
        x: float64 ``[n, d]``, scaled with statistics of this party's training rows.
        y: int64 ``[n]`` fraud labels (1 = fraud) for the bank, ``None`` for the partner.
        is_test: bool ``[n]``, the row's customer is in the test set (`split_by_id`).
        feature_names: names of the ``d`` columns of ``x``.
    """

    name: str
    ids: tuple[str, ...]
    x: np.ndarray
    y: np.ndarray | None
    is_test: np.ndarray
    feature_names: tuple[str, ...]

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """int64 row indices of ``ids`` in this table (e.g. to align rows after PSI)."""
        index = {customer: row for row, customer in enumerate(self.ids)}
        missing = [customer for customer in ids if customer not in index]
        check(
            not missing,
            f"{len(missing)} id(s) are not customers of the {self.name} (first: {missing[:1]})",
        )
        return np.array([index[customer] for customer in ids], dtype=np.int64)


@dataclass(frozen=True)
class VerticalFraud:
    """The two parties of the vertical fraud example."""

    bank: PartyData
    partner: PartyData


def split_by_id(ids: Sequence[str], test_fraction: float, salt: int) -> np.ndarray:
    """bool ``[len(ids)]``: whether each customer is in the test set.

    A customer is a test customer when the first 8 bytes of ``SHA-256("veil/vertical-split" ‖
    salt ‖ id)``, read as a number in [0, 1), are below ``test_fraction``: every party that
    knows the salt puts a given customer on the same side, without communication.
    """
    check(0 < test_fraction < 1, f"test_fraction must be in (0, 1) (got {test_fraction})")
    prefix = b"veil/vertical-split\x00" + str(salt).encode() + b"\x00"
    draws = [
        int.from_bytes(hashlib.sha256(prefix + customer.encode()).digest()[:8], "big") / 2**64
        for customer in ids
    ]
    return np.array(draws, dtype=np.float64) < test_fraction


def standardize(x: np.ndarray, fit_rows: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` with mean and std of ``x[fit_rows]`` (std floored at `STD_FLOOR`)."""
    check(bool(np.any(fit_rows)), "standardize needs at least one row to fit the scaling on")
    mean = x[fit_rows].mean(axis=0)
    std = np.maximum(x[fit_rows].std(axis=0), STD_FLOOR)
    return (x - mean) / std


def make_vertical_fraud(
    *,
    num_shared: int = 2000,
    num_bank_only: int = 500,
    num_partner_only: int = 500,
    num_partner_signals: int = 8,
    fraud_rate: float = 0.03,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> VerticalFraud:
    """Generate the bank's and the partner's tables (see the module docstring).

    The bank has ``num_shared + num_bank_only`` customers with `BANK_FEATURES` and labels; the
    partner has ``num_shared + num_partner_only`` customers with ``distance_km`` and
    ``num_partner_signals`` generic fraud signals. The same ``seed`` gives the same tables.
    """
    check(num_shared >= 2, f"num_shared must be >= 2 (got {num_shared})")
    check(num_bank_only >= 0, f"num_bank_only must be >= 0 (got {num_bank_only})")
    check(num_partner_only >= 0, f"num_partner_only must be >= 0 (got {num_partner_only})")
    check(
        num_partner_signals >= 0,
        f"num_partner_signals must be >= 0 (got {num_partner_signals})",
    )
    check(0 < test_fraction < 1, f"test_fraction must be in (0, 1) (got {test_fraction})")
    total = num_shared + num_bank_only + num_partner_only
    data = make_fraud(
        num_banks=1,
        rows_per_bank=total,
        fraud_rate=fraud_rate,
        num_features=len(TRANSACTION_FEATURES) + num_partner_signals,
        seed=seed,
    )
    rng = np.random.default_rng([seed, 0x7E27])
    ids = np.array([f"cust-{k:09d}" for k in rng.choice(10**9, total, replace=False)])
    bank_rows = rng.permutation(num_shared + num_bank_only)
    partner_rows = rng.permutation(
        np.r_[0:num_shared, num_shared + num_bank_only : total].astype(np.int64)
    )
    names = (*TRANSACTION_FEATURES, *(f"partner_signal_{j}" for j in range(num_partner_signals)))
    bank_columns = [names.index(f) for f in BANK_FEATURES]
    partner_columns = [j for j in range(len(names)) if j not in bank_columns]
    x = data.x.astype(np.float64)
    bank = _party(
        "bank",
        ids[bank_rows],
        x[np.ix_(bank_rows, bank_columns)],
        data.y[bank_rows],
        [names[j] for j in bank_columns],
        test_fraction,
        seed,
    )
    partner = _party(
        "partner",
        ids[partner_rows],
        x[np.ix_(partner_rows, partner_columns)],
        None,
        [names[j] for j in partner_columns],
        test_fraction,
        seed,
    )
    return VerticalFraud(bank=bank, partner=partner)


def _party(
    name: str,
    ids: np.ndarray,
    raw: np.ndarray,
    y: np.ndarray | None,
    feature_names: list[str],
    test_fraction: float,
    seed: int,
) -> PartyData:
    """A party's table: split by id, log the heavy tails, standardize on its training rows."""
    id_tuple = tuple(str(customer) for customer in ids)
    is_test = split_by_id(id_tuple, test_fraction, salt=seed)
    logged = raw.copy()
    for j, feature in enumerate(feature_names):
        if feature in LOG_FEATURES:
            logged[:, j] = np.log1p(logged[:, j])
    x = standardize(logged, ~is_test)
    return PartyData(
        name=name,
        ids=id_tuple,
        x=x,
        y=None if y is None else y.astype(np.int64),
        is_test=is_test,
        feature_names=tuple(feature_names),
    )
