"""Truncation of fixed-point products on two-out-of-two additive shares (SecureML, Theorem 1).

After a product the value carries 2f fractional bits and must be divided by 2^f. SecureML
(Mohassel & Zhang 2017, §4.1) shows that each party may shift its own share, with no message:

    party 0:  ⌊x₀ / 2^d⌋                party 1:  2^64 − ⌊(2^64 − x₁) / 2^d⌋

(logical shifts of the unsigned shares). The result is ⌊x / 2^d⌋ or ⌊x / 2^d⌋ + 1, unless x₀
falls within |x| of the wrap-around point, which happens with probability at most
2^(ℓx + 1 − 64) for |x| < 2^ℓx (`truncation_failure_probability`); then the result is off by
about 2^(64 − d), a wrong value rather than a small error. Keeping values small (a few
integer bits above the 2f fractional ones) keeps this far below one in a million per element.

The three-party scheme (`veil.mpc.replicated`) truncates with a masked opening instead (ABY3's
Π_trunc2), which fits in the product's own round.
"""

from __future__ import annotations

import numpy as np

from veil.errors import ConfigError
from veil.mpc.ring import RING_BITS

__all__ = ["truncate_pair_share", "truncation_failure_probability"]


def truncate_pair_share(share: np.ndarray, bits: int, role: int) -> np.ndarray:
    """Party ``role``'s (0 or 1) share of ``x / 2^bits`` from its share of ``x`` (local)."""
    if role not in (0, 1):
        raise ConfigError(f"role must be 0 or 1 (got {role})")
    shift = np.uint64(bits)
    if role == 0:
        return share >> shift
    return np.negative(np.negative(share) >> shift)


def truncation_failure_probability(magnitude_bits: float) -> float:
    """Upper bound on the chance that truncating one value with ``|x| < 2^magnitude_bits``
    (in ring units, fractional bits included) goes wrong: ``2^(ℓx + 1 − 64)``."""
    return min(1.0, 2.0 ** (magnitude_bits + 1 - RING_BITS))
