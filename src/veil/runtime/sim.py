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

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from veil.errors import ConfigError
from veil.fl.links import ClientUpdates, Events
from veil.fl.local import LocalTraining
from veil.params import Params
from veil.runtime import linear_stack
from veil.runtime.dpsgd_local import client_dpsgd_events, train_dpsgd_clients
from veil.runtime.fused import train_fused
from veil.runtime.lowrank import dense_to_lowrank_cost, train_lowrank
from veil.runtime.pool import ClientPool, TrainingChunk
from veil.runtime.sequential import train_sequential
from veil.runtime.vectorized import train_vectorized

if TYPE_CHECKING:
    from veil.fl.round import RoundPlan

# An engine runs local SGD for a chunk of clients: (module, global params, chunk, plan) →
# (stacked deltas [C, ...], mean training loss per client [C]).
Engine = Callable[[nn.Module, Params, TrainingChunk, LocalTraining], tuple[Params, Tensor]]
ENGINES: dict[str, Engine] = {
    "lowrank": train_lowrank,
    "fused": train_fused,
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
        return "auto" if linear_stack.supports(module) else "vmap"
    if engine not in ENGINES:
        raise ConfigError(
            f"runtime.engine must be one of ['auto', *{list(ENGINES)}] (got {engine!r})"
        )
    if engine in ("fused", "lowrank") and not linear_stack.supports(module):
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

    ``rows`` is the number of batch slots per client in the round (steps × batch size). The
    low-rank engine keeps per layer ``U [rows, in]`` and ``V [rows, out]``, and for the first layer
    also ``U W_0ᵀ [rows, out]`` and the Gram matrix ``[rows, rows]``.
    """
    budgets = CHUNK_BYTES["cuda" if device.type == "cuda" else "cpu"]
    if engine == "dpsgd":  # per-sample gradients of every row of every client in the chunk
        per_client = 4 * rows * sum(p.numel() for p in module.parameters())
        return int(np.clip(budgets["factors"] // per_client, 1, 16384))
    if engine == "lowrank":
        layers = [layer for _, layer in linear_stack.linear_layers(module)]
        floats = sum(rows * (m.in_features + m.out_features) for m in layers)
        floats += rows * (rows + layers[0].out_features)
        per_client, budget = 4 * floats, budgets["factors"]
    else:
        per_client, budget = 4 * sum(p.numel() for p in module.parameters()), budgets["weights"]
    return int(np.clip(budget // per_client, 1, 16384))


def encode_updates(
    deltas: Params,
    sizes: np.ndarray,
    client_ids: np.ndarray,
    plan: RoundPlan,
    encoder_state: Any,
    key: torch.Generator,
) -> tuple[ClientUpdates, Any, Events]:
    """Run ``plan.encoder`` on the clients' stacked ``deltas``, weighted by their row counts."""
    device = next(iter(deltas.values())).device
    weights = torch.as_tensor(sizes, dtype=torch.float32, device=device)
    ids = torch.as_tensor(client_ids, dtype=torch.int64, device=device)
    return plan.encoder.apply(ClientUpdates(deltas, weights, ids), encoder_state, key)


@dataclass
class SimulatedTransport:
    """In-process transport: every client lives in ``pool``; training runs on ``pool.x.device``.

    It trains its own copy of ``module`` (moved to the pool's device); the caller's is untouched.
    """

    module: nn.Module
    pool: ClientPool
    engine: str = "auto"
    chunk_size: int | None = None
    client_names: list[str] | None = None  # privacy subjects of sample-level DP (default client_i)

    def __post_init__(self) -> None:
        self.module = copy.deepcopy(self.module).to(self.pool.x.device)
        self.engine = resolve_engine(self.engine, self.module)
        self.last_engine: str | None = None  # the engine the latest training round used

    @property
    def num_clients(self) -> int:
        return self.pool.num_clients

    def collect(
        self,
        params: Params,
        client_ids: np.ndarray,
        round_index: int,
        plan: RoundPlan,
        encoder_state: Any,
        key: torch.Generator,
    ) -> tuple[ClientUpdates, Any, Events, Tensor]:
        """Train ``client_ids`` from ``params`` as ``plan.local`` says, run ``plan.encoder`` on
        their deltas; return the updates, encoder state, DP events and each client's mean loss."""
        device = self.pool.x.device
        params = {k: v.to(device) for k, v in params.items()}
        parts: list[Params] = [{k: v.new_zeros((0, *v.shape)) for k, v in params.items()}]
        losses = [torch.zeros(0, device=device)]
        events: Events = []
        if len(client_ids) and plan.local.dp is not None:
            parts, losses, events = self._train_private(params, client_ids, plan, key)
        elif len(client_ids):
            parts, losses = self._train(params, client_ids, round_index, plan)
        deltas = (
            parts[0] if len(parts) == 1 else {k: torch.cat([p[k] for p in parts]) for k in params}
        )
        updates, encoder_state, encoder_events = encode_updates(
            deltas, self.pool.sizes[client_ids], client_ids, plan, encoder_state, key
        )
        return updates, encoder_state, events + encoder_events, torch.cat(losses)

    def _train_private(
        self, params: Params, client_ids: np.ndarray, plan: RoundPlan, key: torch.Generator
    ) -> tuple[list[Params], list[Tensor], Events]:
        """Local DP-SGD of the clients, chunk by chunk, and each client's privacy event."""
        local = plan.local
        self.last_engine = "dpsgd"
        sizes = self.pool.sizes[client_ids]
        rows = int(sizes.max())  # every row is a candidate of every Poisson batch
        device = self.pool.x.device
        chunk = self.chunk_size or default_chunk_size("dpsgd", self.module, rows, device)
        parts, losses = [], []
        for start in range(0, len(client_ids), chunk):
            ids = client_ids[start : start + chunk]
            deltas, loss = train_dpsgd_clients(self.module, params, self.pool, ids, local, key)
            parts.append(deltas)
            losses.append(loss)
        names = self.client_names or [f"client_{i}" for i in range(self.num_clients)]
        return parts, losses, client_dpsgd_events(client_ids, sizes, local, names)

    def _train(
        self, params: Params, client_ids: np.ndarray, round_index: int, plan: RoundPlan
    ) -> tuple[list[Params], list[Tensor]]:
        """Local training of the clients, chunk by chunk: per-chunk deltas and losses."""
        local = plan.local
        sizes = self.pool.sizes[client_ids]
        steps = int(local.num_steps(int(sizes.max())))  # steps grow with a client's rows
        self.last_engine = choose_engine(self.engine, self.module, steps, local.batch_size)
        rows = steps * min(local.batch_size, int(sizes.max()))
        device = self.pool.x.device
        chunk = self.chunk_size or default_chunk_size(self.last_engine, self.module, rows, device)
        train = ENGINES[self.last_engine]
        parts, losses = [], []
        for start in range(0, len(client_ids), chunk):
            ids = client_ids[start : start + chunk]
            chunk_data = self.pool.chunk(ids, round_index, plan.seed, local)
            deltas, loss = train(self.module, params, chunk_data, local)
            parts.append(deltas)
            losses.append(loss)
        return parts, losses
