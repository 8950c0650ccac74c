"""Run a SecAgg+ round in one process: real client and server objects exchanging real messages.

The driver is the transport: it carries each message from sender to receiver, makes clients
drop out at a chosen stage, lets a test tamper with messages in flight, and measures what each
party spends (seconds inside its own code, bytes it sends). A message the server rejects drops
its sender; the round goes on without it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from veil.errors import ConfigError, ProtocolError
from veil.secagg.client import SecAggClient
from veil.secagg.keys import new_identity, public_identity
from veil.secagg.messages import STAGES, ClientMessage, RoundSetup, wire_size
from veil.secagg.server import SecAggServer

Tamper = Callable[[ClientMessage], ClientMessage | None]


@dataclass
class SecAggReport:
    """What a round produced and cost."""

    total: np.ndarray
    survivors: tuple[int, ...]
    server_seconds: float
    client_seconds: dict[int, float]
    bytes_sent: dict[int, int]
    rejected: dict[int, str] = field(default_factory=dict)


class Federation:
    """The clients' long-term identity keys (a PKI): created on first use, public halves shared."""

    def __init__(self) -> None:
        self._private: dict[int, Ed25519PrivateKey] = {}
        self.public: dict[int, bytes] = {}

    def identity(self, client: int) -> Ed25519PrivateKey:
        if client not in self._private:
            self._private[client] = new_identity()
            self.public[client] = public_identity(self._private[client])
        return self._private[client]


def new_round_setup(
    clients,
    *,
    neighbours: int,
    threshold: int,
    min_survivors: int,
    bits: int,
    length: int,
    hybrid: bool = False,
    graph_seed: int = 0,
) -> RoundSetup:
    """Validated public parameters for a round among ``clients`` (fresh random round id)."""
    clients = tuple(int(c) for c in clients)
    if not 1 <= threshold <= neighbours:
        raise ConfigError(f"threshold must be in [1, neighbours = {neighbours}] (got {threshold})")
    if not threshold <= min_survivors <= len(clients):
        raise ConfigError(
            f"min_survivors must be in [threshold = {threshold}, clients = "
            f"{len(clients)}] (got {min_survivors})"
        )
    return RoundSetup(
        os.urandom(16),
        clients,
        neighbours,
        threshold,
        min_survivors,
        bits,
        length,
        hybrid,
        graph_seed,
    )


def run_round(
    setup: RoundSetup,
    inputs: Mapping[int, np.ndarray],
    federation: Federation,
    dropouts: Mapping[int, str] | None = None,
    tamper: Tamper | None = None,
) -> SecAggReport:
    """One round. ``dropouts[c]`` names the stage at which client c stops responding (it never
    sends that stage's message); ``tamper`` may replace or suppress any client message."""
    dropouts = dict(dropouts or {})
    unknown = set(dropouts.values()) - set(STAGES)
    if unknown:
        raise ConfigError(f"dropout stages must be among {STAGES} (got {sorted(unknown)})")
    for c in setup.clients:
        federation.identity(c)
    started = time.perf_counter()
    server = SecAggServer(setup, federation.public)
    server_clock = [time.perf_counter() - started]
    clients, spent = {}, {}
    for c in setup.clients:
        started = time.perf_counter()
        clients[c] = SecAggClient(c, federation.identity(c), setup, federation.public)
        spent[c] = time.perf_counter() - started
    sent = {c: 0 for c in clients}

    def deliver(stage: str, act: Callable[[SecAggClient], ClientMessage], who) -> None:
        for c in who:
            if dropouts.get(c) == stage:
                clients.pop(c)
                continue
            started = time.perf_counter()
            try:
                message = act(clients[c])
            except ProtocolError:  # an honest client refusing: it stops taking part
                clients.pop(c)
                continue
            finally:
                spent[c] += time.perf_counter() - started
            message = tamper(message) if tamper else message
            if message is None:
                continue
            sent[c] += wire_size(message)
            started = time.perf_counter()
            try:
                server.receive(message)
            except ProtocolError:
                pass  # ignored and logged by the server; without an accepted message it drops
            finally:
                server_clock[0] += time.perf_counter() - started

    def server_step(step):
        started = time.perf_counter()
        try:
            return step()
        finally:
            server_clock[0] += time.perf_counter() - started

    deliver("advertise keys", lambda client: client.advertise(), list(clients))
    keys_for = server_step(server.neighbour_keys)
    deliver(
        "share keys",
        lambda client: client.share_keys(keys_for[client.id]),
        [c for c in keys_for if c in clients],
    )
    shares_for = server_step(server.forwarded_shares)
    deliver(
        "masked input",
        lambda client: client.masked_input(shares_for[client.id], inputs[client.id]),
        [c for c in shares_for if c in clients],
    )
    request = server_step(server.unmask_request)
    deliver(
        "unmasking",
        lambda client: client.unmask(request),
        [c for c in request.survivors if c in clients],
    )
    total = server_step(server.result)
    return SecAggReport(
        total, request.survivors, server_clock[0], spent, sent, dict(server.rejected)
    )
