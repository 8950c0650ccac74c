"""Plaintext models that encrypted inference evaluates, compiled to one quadratic form.

Logistic regression ``s(x) = w·x + b`` and the MLP ``d → 16 → 1`` with the quadratic activation
``a(t) = c0 + c1 t + c2 t²`` (CryptoNets-style, Gilad-Bachrach et al. 2016) both expand exactly to
``s(x) = xᵀ(A x + g) + k`` (`QuadraticScore`); `veil.he.inference` evaluates that form on CKKS
ciphertexts. The derivation is in `veil.he.inference`'s module docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from veil.errors import check

INFERENCE_MODELS = ("logistic", "mlp")
ACTIVATION = (0.0, 0.5, 0.25)  # a(t) = c0 + c1 t + c2 t²: t/2 + t²/4
HIDDEN = 16


@dataclass(frozen=True)
class QuadraticScore:
    """``s(x) = xᵀ(A x + g) + k`` in float64; ``quadratic`` (A) is ``None`` for a linear score."""

    quadratic: np.ndarray | None
    linear: np.ndarray
    constant: float

    @property
    def num_features(self) -> int:
        return int(self.linear.size)

    @property
    def depth(self) -> int:
        return 1 if self.quadratic is None else 2

    def plain(self, x: np.ndarray) -> np.ndarray:
        """Scores of the rows of ``x`` ``[n, d]``, in plaintext."""
        x = np.asarray(x, dtype=np.float64)
        inner = self.linear if self.quadratic is None else x @ self.quadratic + self.linear
        return np.sum(x * inner, axis=-1) + self.constant


def compile_logistic(weight: np.ndarray, bias: float) -> QuadraticScore:
    """``s(x) = w·x + b``."""
    return QuadraticScore(None, np.asarray(weight, dtype=np.float64).reshape(-1), float(bias))


def compile_mlp(w1, b1, w2, b2, activation=ACTIVATION) -> QuadraticScore:
    """``s(x) = w2·a(W1 x + b1) + b2`` with ``a(t) = c0 + c1 t + c2 t²``, expanded exactly."""
    w1, b1, w2 = (np.asarray(v, dtype=np.float64) for v in (w1, b1, w2))
    w2 = w2.reshape(-1)
    c0, c1, c2 = activation
    quadratic = c2 * (w1.T * w2) @ w1
    linear = w1.T @ (c1 * w2 + 2 * c2 * w2 * b1)
    constant = float(b2) + float(np.sum(w2 * (c0 + c1 * b1 + c2 * b1**2)))
    return QuadraticScore(quadratic, linear, constant)


class QuadraticActivation(nn.Module):
    """``a(t) = c0 + c1 t + c2 t²``: a polynomial activation CKKS evaluates exactly."""

    def __init__(self, coefficients: tuple[float, float, float] = ACTIVATION) -> None:
        super().__init__()
        self.coefficients = coefficients

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        c0, c1, c2 = self.coefficients
        return c0 + c1 * t + c2 * t * t


def build_model(name: str, num_features: int) -> nn.Sequential:
    """``"logistic"``: Linear(d, 1). ``"mlp"``: Linear(d, 16), a(t), Linear(16, 1). One logit."""
    check(name in INFERENCE_MODELS, f"model must be one of {INFERENCE_MODELS} (got {name!r})")
    if name == "logistic":
        return nn.Sequential(nn.Linear(num_features, 1))
    return nn.Sequential(
        nn.Linear(num_features, HIDDEN), QuadraticActivation(), nn.Linear(HIDDEN, 1)
    )


def train_model(name: str, x: np.ndarray, y: np.ndarray, seed: int) -> nn.Sequential:
    """Full-batch Adam (lr 0.01, weight decay 0.01, 300 steps) on the binary cross-entropy.

    One CPU thread: for 455 rows, thread start-up costs more than it saves (10× on a busy host).
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(name, x.shape[1])
    features, labels = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(300):
            optimizer.zero_grad()
            logits = model(features).squeeze(-1)
            nn.functional.binary_cross_entropy_with_logits(logits, labels).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model


def compile_model(model: nn.Sequential) -> QuadraticScore:
    """The `QuadraticScore` of a model from `build_model`."""
    weights = [p.detach().double().numpy() for p in model.parameters()]
    if len(model) == 1:
        return compile_logistic(weights[0], weights[1].item())
    return compile_mlp(*weights[:3], weights[3].item(), model[1].coefficients)


def plaintext_scores(model: nn.Sequential, x: np.ndarray) -> np.ndarray:
    """The network's own logits, in float64: the reference the encrypted scores must match."""
    with torch.no_grad():
        return model.double()(torch.as_tensor(x, dtype=torch.float64)).squeeze(-1).numpy()
