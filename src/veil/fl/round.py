"""One federated round, the same function for every runtime (simulation, Ray, gRPC).

    sample clients ─► transport: local training + client encoder chain
                   ─► server aggregator chain ─► server optimizer ─► privacy ledger

Every link that releases information returns dp-accounting events; they are recorded in the
ledger *before* the new global model is returned, so a refused release leaves the state unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from veil.fl.links import ClientUpdates, Events, Link
from veil.fl.local import LocalTraining
from veil.fl.sampling import ClientSampler
from veil.fl.server_optimizers import ServerOptimizer
from veil.params import Params
from veil.randomness import noise_generator, sampling_generator


class Transport(Protocol):
    """Carries a round's local training to the clients and their encoded updates back."""

    @property
    def num_clients(self) -> int: ...

    def collect(
        self,
        params: Params,
        client_ids: np.ndarray,
        round_index: int,
        plan: RoundPlan,
        encoder_state: Any,
        key: torch.Generator,
    ) -> tuple[ClientUpdates, Any, Events, Tensor]:
        """Train ``client_ids`` from ``params`` (``plan.local``, batch order from ``plan.seed``),
        run ``plan.encoder`` on their updates; return the updates (an empty batch when
        ``client_ids`` is empty), the encoder state, its DP events and each client's mean loss."""
        ...


class EventSink(Protocol):
    """Where a round's DP events go before its result is released (the privacy ledger)."""

    def record(self, round_index: int, events: Events) -> None: ...


@dataclass(frozen=True)
class RoundPlan:
    """What a round does: who takes part, how they train, how updates are encoded and combined."""

    sampler: ClientSampler
    local: LocalTraining
    encoder: Link
    aggregator: Link
    server_optimizer: ServerOptimizer
    seed: int = 0
    noise_seed_for_testing: int | None = None
    secret_sampling: bool = False  # who takes part is private (DP): draw it like the noise


@dataclass(frozen=True)
class ServerState:
    """Everything the server carries between rounds (what a checkpoint must hold)."""

    params: Params
    optimizer_state: Any
    encoder_state: Any
    aggregator_state: Any
    round_index: int = 0


@dataclass(frozen=True)
class RoundMetrics:
    """What happened in a round: participants, their mean training loss, time, DP events."""

    round_index: int
    client_ids: np.ndarray
    train_loss: float | None
    seconds: float
    events: Events = field(default_factory=list)
    bytes_per_client: float | None = None  # mean bytes a participant sent (None: nobody)


def init_server_state(params: Params, plan: RoundPlan) -> ServerState:
    """The state before round 1: the initial model and every link's and optimizer's state."""
    return ServerState(
        params=params,
        optimizer_state=plan.server_optimizer.init(params),
        encoder_state=plan.encoder.init(params),
        aggregator_state=plan.aggregator.init(params),
    )


def run_round(
    state: ServerState, plan: RoundPlan, transport: Transport, ledger: EventSink | None = None
) -> tuple[ServerState, RoundMetrics]:
    """Run round ``state.round_index + 1`` and return the new server state and its metrics.

    A round that samples nobody (possible under Poisson sampling) still runs both chains on the
    empty batch, so server-side noise and its ledger entry are never skipped.
    """
    started = time.perf_counter()
    round_index = state.round_index + 1
    if plan.secret_sampling:
        rng = sampling_generator(plan.noise_seed_for_testing, round_index)
    else:
        rng = np.random.default_rng([plan.seed, round_index])
    client_ids = plan.sampler.sample(transport.num_clients, rng)
    device = next(iter(state.params.values())).device
    key = noise_generator(plan.noise_seed_for_testing, round_index, device)
    updates, encoder_state, events, losses = transport.collect(
        state.params, client_ids, round_index, plan, state.encoder_state, key
    )
    aggregate, aggregator_state, aggregator_events = plan.aggregator.apply(
        updates, state.aggregator_state, key
    )
    events = events + aggregator_events
    device = next(iter(aggregate.values())).device
    current = {k: v.to(device) for k, v in state.params.items()}
    params, optimizer_state = plan.server_optimizer.update(
        current, aggregate, state.optimizer_state
    )
    if ledger is not None:
        ledger.record(round_index, events)
    total = updates.weights.sum()
    train_loss = float((losses * updates.weights).sum() / total) if total > 0 else None
    new_state = ServerState(params, optimizer_state, encoder_state, aggregator_state, round_index)
    seconds = time.perf_counter() - started
    return new_state, RoundMetrics(
        round_index, client_ids, train_loss, seconds, events, updates.bytes_per_client()
    )
