"""Feature scaling inside the secure run: the hospitals learn the pooled per-feature mean and
standard deviation of the training rows, and nothing else about each other's rows.

Each feature is standardised as (x − mean) / max(std, 1e-8), the scaling `veil.data.federate`
fits on pooled training rows (there with E[x²] − mean², here with the sum of squared
deviations, which is the same number without the cancellation). With the rows split, the
statistics come from two secure sums, each one `share_each` round and one opening:

    mean = (Σᵢ Sᵢ) / n,   Sᵢ = Σ_{rows of i} x
    std² = (Σᵢ Qᵢ) / n,   Qᵢ = Σ_{rows of i} (x − mean)²

so only the two totals are opened (n is public in the spec). With the features split, every
hospital holds all rows of its own columns and scales them alone, with no message.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from veil.data.federation import STD_FLOOR
from veil.mpc.ring import MAX_FRACTIONAL_BITS
from veil.mpc.sharing import ArithmeticProtocol

__all__ = ["secure_sum", "standardize"]

_LOW_BITS = 24  # the low limb carries v mod 2^24 at MAX_FRACTIONAL_BITS fractional bits


def standardize(protocol: ArithmeticProtocol, split: str, num_rows: int, data):
    """``data`` (a `veil.mpc.training.PartyData`) with train and test features standardised by
    the pooled training statistics (rows split: two secure sums; features split: local)."""
    x = np.asarray(data.x_train, np.float64)
    if split == "features":
        mean = x.mean(axis=0)
        deviation = np.sqrt(np.square(x - mean).mean(axis=0))
    else:
        mean = secure_sum(protocol, x.sum(axis=0)) / num_rows
        deviation = np.sqrt(secure_sum(protocol, np.square(x - mean).sum(axis=0)) / num_rows)
    scale = np.maximum(deviation, STD_FLOOR)

    def scaled(values: np.ndarray) -> np.ndarray:
        return ((np.asarray(values, np.float64) - mean) / scale).astype(values.dtype)

    return replace(data, x_train=scaled(data.x_train), x_test=scaled(data.x_test))


def secure_sum(protocol: ArithmeticProtocol, value: np.ndarray) -> np.ndarray:
    """Σ over all parties of each one's ``value`` (same shape everywhere), opened to all and
    nothing else: every party shares its value in one round, the shares are added locally, and
    the total is opened.

    Each value travels as two integers, ⌊v / 2^24⌋ and (v mod 2^24) · 2^30, so the total keeps
    an absolute precision of about 2^-30 whatever its size (a variance sum of 0.02 as well as
    one of 10^9), where one fixed-point number of ``protocol.frac_bits`` would keep 2^-16."""
    value = np.asarray(value, np.float64)
    high = np.floor(value / 2.0**_LOW_BITS)
    low = (value - high * 2.0**_LOW_BITS) * 2.0**MAX_FRACTIONAL_BITS
    limbs = np.stack([high, np.rint(low)]).astype(np.int64)
    parties = range(protocol.party.num_parties)
    shares = protocol.share_each({i: limbs.shape for i in parties}, limbs, integer=True)
    total = shares[0]
    for i in parties[1:]:
        total = total + shares[i]
    high_total, low_total = total.reveal().astype(np.float64)
    return high_total * 2.0**_LOW_BITS + low_total / 2.0**MAX_FRACTIONAL_BITS
