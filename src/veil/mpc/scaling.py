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
from veil.errors import ConfigError
from veil.mpc.sharing import ArithmeticProtocol

__all__ = ["SUM_FRACTIONAL_BITS", "secure_sum", "standardize"]

SUM_FRACTIONAL_BITS = 24


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
        dtype = np.result_type(values.dtype, np.float32)  # integer features become floats
        return ((np.asarray(values, np.float64) - mean) / scale).astype(dtype)

    return replace(data, x_train=scaled(data.x_train), x_test=scaled(data.x_test))


def secure_sum(protocol: ArithmeticProtocol, value: np.ndarray) -> np.ndarray:
    """Σ over all parties of each one's ``value`` (same shape everywhere), opened to all and
    nothing else: every party shares its value in one round, the shares are added locally, and
    the total is opened.

    Values travel as integers at 2^-24 (``SUM_FRACTIONAL_BITS``), finer than the protocol's
    fixed point, so that a variance sum of 0.02 keeps six significant digits; each party's
    value must stay below 2^38 / parties in magnitude (about 9·10^10 for three)."""
    parties = protocol.party.num_parties
    value = np.asarray(value, np.float64)
    limit = 2.0 ** (62 - SUM_FRACTIONAL_BITS) / parties
    if not np.all(np.abs(value) < limit):  # also catches nan and inf
        raise ConfigError(
            f"a secure sum takes values below {limit:.3g} in magnitude (got "
            f"{np.abs(value).max():.3g}): rescale the raw features, e.g. to thousands"
        )
    scaled = np.rint(value * 2.0**SUM_FRACTIONAL_BITS).astype(np.int64)
    shares = protocol.share_each({i: scaled.shape for i in range(parties)}, scaled, integer=True)
    total = shares[0]
    for i in range(1, parties):
        total = total + shares[i]
    return total.reveal().astype(np.float64) / 2.0**SUM_FRACTIONAL_BITS
