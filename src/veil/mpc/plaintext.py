"""The models of secure training, in the clear: shared initial weights, batch order, forward pass,
and the plaintext training that secure training is compared with.

Both run mini-batch SGD on the binary cross-entropy of a logistic regression or of a one-hidden-
layer ReLU network, from the same initial weights (drawn from the public run seed, as
``torch.nn.Linear`` draws them: uniform in ±1/√fan_in) over the same batches (a fresh
permutation of the rows each epoch). The plaintext run uses the exact sigmoid; secure
training uses an approximation (`veil.mpc.nonlinear`), which ``sigmoid="taylor"``,
``"piecewise"`` or ``"polynomial"`` reproduces here in floating point.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from veil.errors import ConfigError
from veil.mpc.nonlinear import SIGMOIDS, approximate_sigmoid

__all__ = [
    "MODELS",
    "batch_order",
    "design_matrix",
    "initial_weights",
    "logits",
    "train_plaintext",
]

MODELS = ("logistic", "mlp")


def initial_weights(model: str, num_features: int, hidden: int, seed: int) -> list[np.ndarray]:
    """``[w]`` (``[d + 1, 1]``, bias first) or ``[W₁, W₂]`` (``[d + 1, h]``, ``[h + 1, 1]``)."""
    if model not in MODELS:
        raise ConfigError(f"model must be one of {MODELS} (got {model!r})")
    if model == "logistic":
        return [np.zeros((num_features + 1, 1))]
    if hidden < 1:
        raise ConfigError(f"hidden must be >= 1 (got {hidden})")
    rng = np.random.default_rng([seed, 0x4D4C50])
    first = rng.uniform(-1, 1, (num_features + 1, hidden)) / np.sqrt(num_features)
    second = rng.uniform(-1, 1, (hidden + 1, 1)) / np.sqrt(hidden)
    return [first, second]


def batch_order(
    num_rows: int, batch_size: int, epochs: int, seed: int
) -> Iterator[list[np.ndarray]]:
    """For each epoch, its batches: a permutation of the rows from the public seed, cut in
    ``batch_size`` (the last batch may be smaller)."""
    rng = np.random.default_rng([seed, 0x42415443])
    for _ in range(epochs):
        order = rng.permutation(num_rows)
        yield [order[s : s + batch_size] for s in range(0, num_rows, batch_size)]


def design_matrix(x: np.ndarray) -> np.ndarray:
    """``[1, x]``: a column of ones for the bias, then the features."""
    return np.hstack([np.ones((x.shape[0], 1)), x])


def logits(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """The model's logits for feature rows ``x`` (``[n]``)."""
    if len(weights) == 1:
        return (design_matrix(x) @ weights[0])[:, 0]
    hidden = np.maximum(design_matrix(x) @ weights[0], 0.0)
    return (design_matrix(hidden) @ weights[1])[:, 0]


def train_plaintext(
    model: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    hidden: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    sigmoid: str = "exact",
) -> list[np.ndarray]:
    """Mini-batch SGD in float64, the same steps as `veil.mpc.training` (see the module
    docstring); ``sigmoid`` is ``"exact"`` or one of `veil.mpc.nonlinear.SIGMOIDS`."""
    if sigmoid not in ("exact", *SIGMOIDS):
        raise ConfigError(f"sigmoid must be exact or one of {SIGMOIDS} (got {sigmoid!r})")
    weights = initial_weights(model, x.shape[1], hidden, seed)
    design, labels = design_matrix(x), np.asarray(y, np.float64)[:, None]
    for epoch in batch_order(len(x), batch_size, epochs, seed):
        for rows in epoch:
            scale = learning_rate / len(rows)
            xb, yb = design[rows], labels[rows]
            if model == "logistic":
                residual = (approximate_sigmoid(xb @ weights[0], sigmoid) - yb) * scale
                weights[0] = weights[0] - xb.T @ residual
                continue
            first, second = weights
            pre = xb @ first
            hidden_out = design_matrix(np.maximum(pre, 0.0))
            residual = (approximate_sigmoid(hidden_out @ second, sigmoid) - yb) * scale
            back = (residual @ second[1:].T) * (pre >= 0)
            weights = [first - xb.T @ back, second - hidden_out.T @ residual]
    return weights
