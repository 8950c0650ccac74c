"""The vectorized simulator: the in-process transport that trains many clients per step.

``SimulatedTransport.collect`` trains the sampled clients in chunks (bounding memory), runs the
client encoder chain on the stacked updates, and hands a `ClientUpdates` batch to the server.
Engines, all with the same signature and the same results (to float rounding):

- ``lowrank``: Linear stacks trained against the shared global weights plus per-client low-rank
  corrections (`veil.runtime.lowrank`), fastest for a few short local steps;
- ``fused``: in-place batched SGD with per-client weight copies for Linear stacks
  (`veil.runtime.fused`), fastest for many local steps;
- ``vmap``: ``torch.func.vmap(grad(...))`` for any vmappable model (`veil.runtime.vectorized`);
- ``sequential``: a plain per-client ``torch.optim.SGD`` loop (`veil.runtime.sequential`).

``auto`` picks, each round, ``lowrank`` or ``fused`` (by their arithmetic for that round's step
count) when the model is a Linear stack, else ``vmap``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from veil.errors import ConfigError
from veil.fl.links import ClientUpdates, Events, Link
from veil.fl.local import LocalTraining
from veil.params import Params
from veil.runtime import fused
from veil.runtime.lowrank import dense_to_lowrank_cost, train_lowrank
from veil.runtime.pool import ClientPool
from veil.runtime.sequential import train_sequential
from veil.runtime.vectorized import train_vectorized

Engine = Callable[
    [nn.Module, Params, Tensor, Tensor, Tensor, Tensor, LocalTraining], tuple[Params, Tensor]
]
ENGINES: dict[str, Engine] = {
    "lowrank": train_lowrank,
    "fused": fused.train_fused,
    "vmap": train_vectorized,
    "sequential": train_sequential,
}
# Working memory of one chunk of clients: per-client weight copies (fused, vmap, sequential) or
# low-rank factors (lowrank). On a CPU, weight copies should stay near the last-level cache.
CHUNK_BYTES = {
    "cpu": {"weights": 8 * 2**20, "factors": 64 * 2**20},
    "cuda": {"weights": 2 * 2**30, "factors": 2 * 2**30},
}


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; otherwise the named device (validated)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"runtime.device is {device!r} but CUDA is not available; use 'auto' or 'cpu'"
        )
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"runtime.device must be 'auto', 'cpu' or 'cuda[:N]' (got {device!r})")
    return torch.device(device)


def resolve_engine(engine: str, module: nn.Module) -> str:
    """Validate ``engine`` for ``module``; ``"auto"`` stays ``auto`` for Linear stacks (chosen per
    round by `choose_engine`) and becomes ``vmap`` otherwise."""
    if engine == "auto":
        return "auto" if fused.supports(module) else "vmap"
    if engine not in ENGINES:
        raise ConfigError(
            f"runtime.engine must be one of ['auto', *{list(ENGINES)}] (got {engine!r})"
        )
    if engine in ("fused", "lowrank") and not fused.supports(module):
        raise ConfigError(
            f"runtime.engine {engine!r} needs a Sequential of Linear layers and ReLU/Tanh/Sigmoid; "
            "use 'auto' or 'vmap' for this model"
        )
    return engine


def choose_engine(engine: str, module: nn.Module, steps: int, batch_size: int) -> str:
    """The engine for a round: ``auto`` → ``lowrank`` when estimated cheaper, else ``fused``."""
    if engine != "auto":
        return engine
    return "lowrank" if dense_to_lowrank_cost(module, steps, batch_size) < 1 else "fused"


def default_chunk_size(engine: str, module: nn.Module, rows: int, device: torch.device) -> int:
    """Clients per chunk so a chunk's working memory stays within the device's budget.

    ``rows`` is the number of batch slots per client in the round (steps × batch size).
    """
    budgets = CHUNK_BYTES["cuda" if device.type == "cuda" else "cpu"]
    if engine == "lowrank":
        widths = sum(
            layer.in_features + layer.out_features for _, layer in fused.linear_layers(module)
        )
        per_client, budget = 4 * rows * widths, budgets["factors"]
    else:
        per_client, budget = 4 * sum(p.numel() for p in module.parameters()), budgets["weights"]
    return int(np.clip(budget // per_client, 1, 16384))


@dataclass
class SimulatedTransport:
    """In-process transport: every client lives in ``pool``; training runs on ``pool.x.device``."""

    module: nn.Module
    pool: ClientPool
    seed: int
    engine: str = "auto"
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        self.module = self.module.to(self.pool.x.device)
        self.engine = resolve_engine(self.engine, self.module)
        self.last_engine = self.engine  # the engine the latest round actually used

    @property
    def num_clients(self) -> int:
        return self.pool.num_clients

    def collect(
        self,
        params: Params,
        client_ids: np.ndarray,
        round_index: int,
        local: LocalTraining,
        encoder: Link,
        encoder_state: Any,
        key: torch.Generator,
    ) -> tuple[ClientUpdates, Any, Events, Tensor]:
        """Train ``client_ids`` from ``params``, encode their deltas; return updates, encoder
        state, DP events and each client's mean training loss."""
        device = self.pool.x.device
        params = {k: v.to(device) for k, v in params.items()}
        index, mask = self.pool.schedules(client_ids, round_index, self.seed, local)
        self.last_engine = choose_engine(self.engine, self.module, index.shape[1], local.batch_size)
        chunk = self.chunk_size or default_chunk_size(
            self.last_engine, self.module, index[0].numel(), device
        )
        train = ENGINES[self.last_engine]
        parts, losses = [], []
        for start in range(0, len(client_ids), chunk):
            part = slice(start, start + chunk)
            deltas, loss = train(
                self.module, params, self.pool.x, self.pool.y, index[part], mask[part], local
            )
            parts.append(deltas)
            losses.append(loss)
        deltas = (
            parts[0] if len(parts) == 1 else {k: torch.cat([p[k] for p in parts]) for k in params}
        )
        weights = torch.as_tensor(self.pool.sizes[client_ids], dtype=torch.float32, device=device)
        ids = torch.as_tensor(client_ids, device=device)
        updates, encoder_state, events = encoder.apply(
            ClientUpdates(deltas, weights, ids), encoder_state, key
        )
        return updates, encoder_state, events, torch.cat(losses)
