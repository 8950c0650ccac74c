"""Server optimizers: how the global model moves given the aggregate client update.

Following Reddi et al. 2021 ("Adaptive Federated Optimization"), the aggregate update Δ (mean of
client model deltas) is a pseudo-gradient step; with x the global model and η the server rate:

- FedAvg:  x ← x + η Δ                                   (η = 1 is McMahan et al. 2017)
- FedAvgM: m ← β m + Δ;            x ← x + η m           (Hsu et al. 2019)
- FedAdam: m ← β₁ m + (1-β₁) Δ;    v ← β₂ v + (1-β₂) Δ²;              x ← x + η m / (√v + τ)
- FedYogi: m as Adam;              v ← v - (1-β₂) Δ² sign(v - Δ²);    x ← x + η m / (√v + τ)

Adam and Yogi start from m = 0 and v = τ² and use no bias correction, as in the paper.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from veil.errors import ConfigError, check
from veil.params import Params, tree_map


class ServerOptimizer(NamedTuple):
    """``init(params) -> state``; ``update(params, delta, state) -> (params, state)``."""

    init: Callable[[Params], Any]
    update: Callable[[Params, Params, Any], tuple[Params, Any]]


def fedavg(lr: float = 1.0) -> ServerOptimizer:
    """x ← x + η Δ."""
    check(lr > 0, f"server.lr must be > 0 (got {lr})")

    def update(params: Params, delta: Params, state: None):
        return tree_map(lambda x, d: x + lr * d, params, delta), state

    return ServerOptimizer(lambda params: None, update)


def fedavgm(lr: float = 1.0, momentum: float = 0.9) -> ServerOptimizer:
    """Server momentum: m ← β m + Δ; x ← x + η m."""
    check(lr > 0, f"server.lr must be > 0 (got {lr})")
    check(0 <= momentum < 1, f"server.momentum must be in [0, 1) (got {momentum})")

    def update(params: Params, delta: Params, m: Params):
        m = tree_map(lambda mi, d: momentum * mi + d, m, delta)
        return tree_map(lambda x, mi: x + lr * mi, params, m), m

    return ServerOptimizer(lambda params: tree_map(torch.zeros_like, params), update)


def _adaptive(
    second_moment: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> ServerOptimizer:
    check(lr > 0, f"server.lr must be > 0 (got {lr})")
    check(0 <= beta1 < 1, f"server.beta1 must be in [0, 1) (got {beta1})")
    check(0 <= beta2 < 1, f"server.beta2 must be in [0, 1) (got {beta2})")
    check(tau > 0, f"server.tau must be > 0 (got {tau})")

    def init(params: Params):
        return tree_map(torch.zeros_like, params), tree_map(
            lambda x: torch.full_like(x, tau**2), params
        )

    def update(params: Params, delta: Params, state):
        m, v = state
        m = tree_map(lambda mi, d: beta1 * mi + (1 - beta1) * d, m, delta)
        v = tree_map(second_moment, v, delta)
        new = tree_map(lambda x, mi, vi: x + lr * mi / (vi.sqrt() + tau), params, m, v)
        return new, (m, v)

    return ServerOptimizer(init, update)


def fedadam(
    lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
) -> ServerOptimizer:
    """FedAdam (Reddi et al. 2021, Algorithm 2)."""
    return _adaptive(lambda v, d: beta2 * v + (1 - beta2) * d * d, lr, beta1, beta2, tau)


def fedyogi(
    lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
) -> ServerOptimizer:
    """FedYogi (Reddi et al. 2021, Algorithm 2): additive, sign-controlled second moment."""
    return _adaptive(
        lambda v, d: v - (1 - beta2) * d * d * torch.sign(v - d * d), lr, beta1, beta2, tau
    )


SERVER_OPTIMIZERS: dict[str, Callable[..., ServerOptimizer]] = {
    "fedavg": fedavg,
    "fedavgm": fedavgm,
    "fedadam": fedadam,
    "fedyogi": fedyogi,
}


def build_server_optimizer(name: str, **hyperparameters: float) -> ServerOptimizer:
    """Server optimizer by name, with its hyper-parameters as keyword arguments."""
    if name not in SERVER_OPTIMIZERS:
        raise ConfigError(
            f"server.optimizer must be one of {list(SERVER_OPTIMIZERS)} (got {name!r})"
        )
    builder = SERVER_OPTIMIZERS[name]
    accepted = inspect.signature(builder).parameters
    unknown = sorted(set(hyperparameters) - set(accepted))
    if unknown:
        raise ConfigError(
            f"server optimizer {name!r} takes {list(accepted)} (got unknown {unknown})"
        )
    return builder(**hyperparameters)
