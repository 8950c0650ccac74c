"""Non-linear functions on shared values: sign, comparison, ReLU (garbled circuits), sigmoid.

- `sign_bit` (1 where x < 0): A2Y into a garbled `msb_of_sum` circuit and Y2A back
  (`veil.mpc.conversion`), 63 AND gates per value. `less_than(a, b)` is the sign of a − b and
  is right while |a − b| < 2^63 in ring units (2^(63 − f) as a real).
- `relu` returns max(x, 0) and its derivative 1[x ≥ 0] (kept for back-propagation): the
  derivative is an integer 0/1 sharing, so x · 1[x ≥ 0] needs one product and no truncation.
- Sigmoid, by approximations whose error is measured by `sigmoid_error`
  (max |approx − σ| over a grid):

  ============ ================================ ============ ========= ==========================
  name         formula                          on [−2, 2]   on ℝ      cost
  ============ ================================ ============ ========= ==========================
  ``taylor``   0.5 + z/4 (first order at 0)     0.119        unbounded local (a public product)
  ``piecewise`` clip(0.5 + z/4, 0, 1)           0.119        0.119     two ReLUs (garbled)
  ============ ================================ ============ ========= ==========================

  Logistic regression trains with ``taylor`` (its gradient then needs no comparison; the
  weights stay where |z| is small, see `veil.mpc.training`); the MLP's output uses
  ``piecewise``, which stays in [0, 1] for any z.
"""

from __future__ import annotations

import numpy as np

from veil.errors import ConfigError
from veil.mpc.conversion import bits_to_arithmetic, msb_xor_shares
from veil.mpc.tensor import SharedTensor, concatenate

__all__ = [
    "SIGMOIDS",
    "less_than",
    "relu",
    "sigmoid",
    "sigmoid_error",
    "sign_bit",
]

SIGMOIDS = ("taylor", "piecewise")


def sign_bit(x: SharedTensor) -> SharedTensor:
    """Integer sharing of 1 where ``x < 0`` and 0 elsewhere (garbled comparison)."""
    protocol = x.protocol
    with protocol.party.operation("comparison"):
        xor_share = msb_xor_shares(protocol.party, protocol.additive_pair(x))
        return bits_to_arithmetic(protocol, xor_share, x.shape)


def less_than(a: SharedTensor, b: SharedTensor | np.ndarray | float) -> SharedTensor:
    """Integer sharing of 1 where ``a < b``, else 0."""
    return sign_bit(a - b)


def relu(x: SharedTensor) -> tuple[SharedTensor, SharedTensor]:
    """``(max(x, 0), 1[x >= 0])``: the activation and its derivative (an integer sharing)."""
    positive = 1 - sign_bit(x)
    return x * positive, positive


def sigmoid(z: SharedTensor, approximation: str = "taylor") -> SharedTensor:
    """σ(z) approximated as in the module docstring (``"taylor"`` or ``"piecewise"``)."""
    if approximation not in SIGMOIDS:
        raise ConfigError(
            f"sigmoid approximation must be one of {SIGMOIDS} (got {approximation!r})"
        )
    line = z * 0.25 + 0.5
    if approximation == "taylor":
        return line
    # clip(u, 0, 1) = relu(u) − relu(u − 1), both ReLUs in one garbled batch
    rectified, _ = relu(concatenate([line, line - 1.0]))
    count = line.shape[0]
    return rectified[:count] - rectified[count:]


def sigmoid_error(approximation: str, low: float = -2.0, high: float = 2.0) -> float:
    """max |approximation(z) − σ(z)| on a fine grid of [low, high] (computed in the clear)."""
    if approximation not in SIGMOIDS:
        raise ConfigError(
            f"sigmoid approximation must be one of {SIGMOIDS} (got {approximation!r})"
        )
    if not low < high:
        raise ConfigError(f"the interval must have low < high (got [{low}, {high}])")
    z = np.linspace(low, high, 200_001)
    line = 0.5 + z / 4
    approx = line if approximation == "taylor" else np.clip(line, 0.0, 1.0)
    return float(np.max(np.abs(approx - 1.0 / (1.0 + np.exp(-z)))))
