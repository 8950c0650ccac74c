"""The vectorized simulator: the in-process transport that trains many clients per step.

``SimulatedTransport.collect`` trains the sampled clients in chunks (bounding memory), runs the
client encoder chain on the stacked updates, and hands a `ClientUpdates` batch to the server.
Engines, all with the same signature and the same results (to float rounding):

- ``fused``: in-place batched SGD for Linear stacks (`veil.runtime.fused`), fastest on CPU;
- ``vmap``: ``torch.func.vmap(grad(...))`` for any vmappable model (`veil.runtime.vectorized`);
- ``sequential``: a plain per-client ``torch.optim.SGD`` loop (`veil.runtime.sequential`).

``auto`` picks ``fused`` when the model allows it, else ``vmap``.
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
from veil.params import Params, num_parameters
from veil.runtime import fused
from veil.runtime.pool import ClientPool
from veil.runtime.sequential import train_sequential
from veil.runtime.vectorized import train_vectorized

Engine = Callable[
    [nn.Module, Params, Tensor, Tensor, Tensor, Tensor, LocalTraining], tuple[Params, Tensor]
]
ENGINES: dict[str, Engine] = {
    "fused": fused.train_fused,
    "vmap": train_vectorized,
    "sequential": train_sequential,
}
CHUNK_BYTES_CPU = 8 * 2**20  # keep a chunk's parameters around the size of the last-level cache
CHUNK_BYTES_GPU = 2 * 2**30


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
    """Validate ``engine`` for ``module``; ``"auto"`` → ``fused`` when supported, else ``vmap``."""
    if engine == "auto":
        return "fused" if fused.supports(module) else "vmap"
    if engine not in ENGINES:
        raise ConfigError(
            f"runtime.engine must be one of ['auto', *{list(ENGINES)}] (got {engine!r})"
        )
    if engine == "fused" and not fused.supports(module):
        raise ConfigError(
            "runtime.engine 'fused' needs a Sequential of Linear layers and ReLU/Tanh/Sigmoid; "
            "use 'auto' or 'vmap' for this model"
        )
    return engine


def default_chunk_size(params: Params, device: torch.device) -> int:
    """Clients per chunk so a chunk's parameters fit the cache (CPU) or a memory budget (GPU)."""
    budget = CHUNK_BYTES_GPU if device.type == "cuda" else CHUNK_BYTES_CPU
    return int(np.clip(budget // (4 * num_parameters(params)), 1, 16384))


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
        chunk = self.chunk_size or default_chunk_size(params, device)
        train = ENGINES[self.engine]
        parts, losses = [], []
        for start in range(0, len(client_ids), chunk):
            ids = client_ids[start : start + chunk]
            index, mask = self.pool.schedules(ids, round_index, self.seed, local)
            deltas, loss = train(self.module, params, self.pool.x, self.pool.y, index, mask, local)
            parts.append(deltas)
            losses.append(loss)
        deltas = {k: torch.cat([p[k] for p in parts]) for k in params}
        weights = torch.as_tensor(self.pool.sizes[client_ids], dtype=torch.float32, device=device)
        ids = torch.as_tensor(client_ids, device=device)
        updates, encoder_state, events = encoder.apply(
            ClientUpdates(deltas, weights, ids), encoder_state, key
        )
        return updates, encoder_state, events, torch.cat(losses)
