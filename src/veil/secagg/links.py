"""SecAgg+ in the FL chain: a client encoder link and a server aggregator link.

    encoder:    clip → scale → stochastic rounding (+ distributed DP noise) → Z_{2^b}
    aggregator: SecAgg+ round among the batch's clients → ring sum → floats → ÷ denominator

The aggregator asks the batch of updates to run the protocol (`RingUpdates.secure_sum`): in
process through `veil.secagg.simulate` (real client and server objects exchanging the message
data classes); a network transport's batch drives the same `SecAggClient`/`SecAggServer` stages
with the same driver over the network (`veil.runtime.grpc`). Encoding is batched over the
clients (one tensor op for the whole batch); masks are expanded per seed straight into the
batch's rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from veil.fl.links import ClientUpdates, Link
from veil.params import Params, flatten_stacked, unflatten
from veil.randomness import cpu_generator
from veil.secagg.distributed_dp import client_noise, summed_noise_event
from veil.secagg.encoding import RingEncoding, from_ring, to_ring
from veil.secagg.messages import RoundSetup
from veil.secagg.simulate import Federation, SecAggReport, new_round_setup, run_round


@dataclass(frozen=True)
class SecAggSettings:
    """Protocol parameters of every round (see `veil.secagg.graph` for the defaults)."""

    neighbours: int
    threshold: int
    min_survivors: int
    encoding: RingEncoding
    hybrid: bool = False
    client_noise_std: float = 0.0  # σ_c of each client's discrete Gaussian share; 0: no DP
    simulated_dropout: float = 0.0
    dropout_stage: str = "unmasking"


@dataclass(frozen=True)
class RingUpdates(ClientUpdates):
    """Client updates encoded in Z_{2^b}, one row per client (``deltas`` is left empty)."""

    ring: np.ndarray
    template: Params
    traffic: dict[int, int] = field(default_factory=dict)  # filled in by the aggregator

    def bytes_per_client(self) -> float | None:
        """Mean bytes a client sent over the whole SecAgg+ round (keys, shares, masked input),
        as counted by the protocol run; before it runs, the masked input alone."""
        if self.traffic:
            return float(np.mean(list(self.traffic.values())))
        return float(self.ring[0].nbytes) if len(self.ring) else None

    def secure_sum(
        self, setup: RoundSetup, federation: Federation, dropouts: dict[int, str]
    ) -> SecAggReport:
        """Run SecAgg+ among these clients, in process (the simulator: ``federation`` holds
        their identity keys, ``dropouts`` are simulated)."""
        inputs = {c: self.ring[i] for i, c in enumerate(setup.clients)}
        return run_round(setup, inputs, federation, dropouts)


def secagg_encoder(settings: SecAggSettings) -> Link:
    """Client side, before masking: encode each update (and add its noise share)."""

    def apply(updates: ClientUpdates, state: None, key: torch.Generator):
        n = updates.num_clients
        template = {k: v.new_zeros(v.shape[1:]) for k, v in updates.deltas.items()}
        rows = flatten_stacked(updates.deltas).cpu()
        generator = cpu_generator(key)
        noise = None
        if settings.client_noise_std > 0 and n:
            noise = client_noise(n, rows.shape[1], settings.client_noise_std, generator)
        ring = to_ring(rows, settings.encoding, generator, noise)
        return RingUpdates({}, updates.weights, updates.client_ids, ring, template), state, []

    return Link(lambda params: None, apply)


def secagg_aggregator(settings: SecAggSettings, denominator: float | None) -> Link:
    """Server side: run SecAgg+ among the batch's clients and return Σ x / denominator
    (``None``: the number of clients in the sum). Raises `ProtocolError` when the round fails.

    With distributed DP, the event is that of a sum carrying ``min_survivors`` noise shares.
    """
    federation = Federation()

    def apply(updates: RingUpdates, rounds_done: int, key: torch.Generator):
        template = {
            k: torch.zeros_like(v, dtype=torch.float64) for k, v in updates.template.items()
        }
        length = sum(v.numel() for v in updates.template.values())
        ids = [int(c) for c in updates.client_ids]
        events = []
        if settings.client_noise_std > 0:
            events.append(
                summed_noise_event(
                    settings.client_noise_std,
                    settings.encoding.sensitivity(length),
                    settings.min_survivors,
                    length,
                )
            )
        if not ids:
            zero = {k: v.float() for k, v in template.items()}
            return zero, rounds_done + 1, events
        setup = new_round_setup(
            ids,
            neighbours=min(settings.neighbours, len(ids) - 1) or 1,
            threshold=settings.threshold,
            min_survivors=settings.min_survivors,
            bits=settings.encoding.bits,
            length=length,
            hybrid=settings.hybrid,
            graph_seed=int(torch.randint(2**62, (1,), generator=cpu_generator(key))),
        )
        report = updates.secure_sum(setup, federation, _dropouts(ids, settings, key))
        updates.traffic.update(report.bytes_sent)
        total = from_ring(report.total, settings.encoding)
        divide_by = denominator if denominator is not None else len(report.survivors)
        aggregate = unflatten((total / divide_by).float(), template)
        like = next(iter(updates.template.values()))
        return {k: v.to(like.device) for k, v in aggregate.items()}, rounds_done + 1, events

    return Link(lambda params: 0, apply)


def _dropouts(ids: list[int], settings: SecAggSettings, key: torch.Generator) -> dict[int, str]:
    """Simulated dropouts: each client independently, at ``settings.dropout_stage``."""
    if settings.simulated_dropout <= 0:
        return {}
    draws = torch.rand(len(ids), generator=cpu_generator(key), dtype=torch.float64)
    return {
        c: settings.dropout_stage
        for c, u in zip(ids, draws.tolist(), strict=True)
        if u < settings.simulated_dropout
    }
