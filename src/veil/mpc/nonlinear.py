"""Non-linear functions on shared values: sign, comparison, ReLU (garbled circuits), sigmoid.

- `sign_bit` (1 where x < 0): A2Y into a garbled `msb_of_sum` circuit and Y2A back
  (`veil.mpc.conversion`), 63 AND gates per value. `less_than(a, b)` is the sign of a − b and
  is right while |a − b| < 2^63 in ring units (2^(63 − f) as a real).
- `relu` returns max(x, 0) and its derivative 1[x ≥ 0] (kept for back-propagation): the
  derivative is an integer 0/1 sharing, so x · 1[x ≥ 0] needs one product and no truncation.
- Sigmoid, by approximations whose error is measured by `sigmoid_error`
  (max |approx − σ| over a grid):

  ============== =============================== ========== ========= ===========================
  name           formula                         on [−2, 2] on ℝ      cost
  ============== =============================== ========== ========= ===========================
  ``taylor``     0.5 + z/4 (first order at 0)    0.119      unbounded local (a public product)
  ``piecewise``  clip(0.5 + z/4, 0, 1)           0.119      0.119     two ReLUs (garbled)
  ``polynomial`` 0.5 + a₁s + a₃s³ + a₅s⁵, s = z/8 0.047     unbounded three products, no comparison
  ============== =============================== ========== ========= ===========================

  ``polynomial`` is the odd degree-5 least-squares fit of σ on [−8, 8] (error ≤ 0.061 there).
  Its leading coefficient is positive, so past the fitted range it overshoots 1 (or undershoots
  0) and the SGD residual σ̃(z) − y pushes z back: logistic regression stays stable with no
  comparison (the degree-3 and degree-7 fits, whose leading coefficients are negative, diverge).
  The MLP's output and ``piecewise`` still need garbled comparisons.
"""

from __future__ import annotations

import numpy as np

from veil.errors import ConfigError
from veil.mpc.conversion import bits_to_arithmetic, msb_xor_shares
from veil.mpc.ring import encode
from veil.mpc.tensor import SharedTensor, concatenate

__all__ = [
    "POLYNOMIAL_COEFFICIENTS",
    "POLYNOMIAL_SCALE",
    "SIGMOIDS",
    "approximate_sigmoid",
    "less_than",
    "relu",
    "sigmoid",
    "sigmoid_error",
    "sign_bit",
]

SIGMOIDS = ("taylor", "piecewise", "polynomial")
POLYNOMIAL_SCALE = 8.0  # s = z / 8: the fitted range [−8, 8] becomes [−1, 1]
POLYNOMIAL_COEFFICIENTS = (1.530238, -2.35197224, 1.38247155)  # a₁, a₃, a₅ of s, s³, s⁵


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


def sigmoid(z: SharedTensor, approximation: str = "taylor", scale: float = 1.0) -> SharedTensor:
    """``scale`` · σ(z), σ approximated as in the module docstring (``"taylor"``,
    ``"piecewise"`` or ``"polynomial"``). The public ``scale`` (SGD's learning rate over the
    batch size) is folded into the approximation's coefficients where it has some."""
    _check_approximation(approximation)
    if approximation == "polynomial":
        return _polynomial(z, scale)
    if approximation == "taylor":
        return z * (0.25 * scale) + 0.5 * scale
    # clip(u, 0, 1) = relu(u) − relu(u − 1), both ReLUs in one garbled batch
    line = z * 0.25 + 0.5
    rectified, _ = relu(concatenate([line, line - 1.0]))
    clipped = rectified[: line.shape[0]] - rectified[line.shape[0] :]
    return clipped if scale == 1.0 else clipped * scale


def _polynomial(z: SharedTensor, scale: float) -> SharedTensor:
    """scale · (0.5 + s·(a₁ + a₃u + a₅u²)) with s = z/8 and u = s²: three products. The 1/8
    and 1/64 ride on the products' truncations and the public coefficients on one shared
    truncation, so s itself is never computed."""
    a1, a3, a5 = (scale * a for a in POLYNOMIAL_COEFFICIENTS)
    eighths = int(np.log2(POLYNOMIAL_SCALE))
    u = z.mul(z, halvings=2 * eighths)
    u2 = u * u
    inner = _public_combination([(u, a3), (u2, a5)]) + a1
    return z.mul(inner, halvings=eighths) + 0.5 * scale


def _public_combination(terms: list[tuple[SharedTensor, float]]) -> SharedTensor:
    """Σ cᵢ·xᵢ for public reals cᵢ, truncated once (each product alone would need its own)."""
    first = terms[0][0]
    total = None
    for tensor, coefficient in terms:
        factor = encode(coefficient, first.protocol.frac_bits)
        scaled = tensor.map_shares(lambda share, factor=factor: share * factor)
        total = scaled if total is None else total + scaled
    total.frac_bits = first.frac_bits + first.protocol.frac_bits
    return first.protocol.rescale(total)


def approximate_sigmoid(z: np.ndarray, approximation: str) -> np.ndarray:
    """The approximation ``approximation`` of σ, or ``"exact"`` σ, in floating point."""
    if approximation == "exact":
        return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z)))
    _check_approximation(approximation)
    if approximation == "polynomial":
        s = np.asarray(z) / POLYNOMIAL_SCALE
        a1, a3, a5 = POLYNOMIAL_COEFFICIENTS
        return 0.5 + s * (a1 + s * s * (a3 + a5 * s * s))
    line = 0.5 + np.asarray(z) / 4
    return line if approximation == "taylor" else np.clip(line, 0.0, 1.0)


def sigmoid_error(approximation: str, low: float = -2.0, high: float = 2.0) -> float:
    """max |approximation(z) − σ(z)| on a fine grid of [low, high] (computed in the clear)."""
    _check_approximation(approximation)
    if not low < high:
        raise ConfigError(f"the interval must have low < high (got [{low}, {high}])")
    z = np.linspace(low, high, 200_001)
    exact = approximate_sigmoid(z, "exact")
    return float(np.max(np.abs(approximate_sigmoid(z, approximation) - exact)))


def _check_approximation(approximation: str) -> None:
    if approximation not in SIGMOIDS:
        raise ConfigError(
            f"sigmoid approximation must be one of {SIGMOIDS} (got {approximation!r})"
        )
