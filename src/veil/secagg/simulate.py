"""Run a SecAgg+ round: the server's driver, and in-process parties for the simulator.

`drive_round` is the server's side of a round: it sends each stage's requests through a
`Parties` object and feeds the answers to a `SecAggServer`. The same driver runs in one process
(`run_round`, with `InProcessParties`: real client objects exchanging real messages) and over the
network (`veil.runtime.grpc`, where each party is a remote site), so the protocol code is the
same in both. The in-process parties make clients drop out at a chosen stage, let a test tamper
with messages in flight, and measure what each party spends (seconds inside its own code, bytes
it sends). A message the server rejects drops its sender; the round goes on without it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

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


class Parties(Protocol):
    """The clients of a round as the server reaches them (in process, or over a network)."""

    def exchange(self, stage: str, requests: Mapping[int, Any]) -> dict[int, ClientMessage]:
        """Give client ``c`` its ``requests[c]`` for ``stage`` (the `RoundSetup` for the first
        stage, then what `SecAggServer` produced); return the messages that came back, by
        client. A client that dropped out, refused or missed the deadline is absent."""
        ...


def answer(
    client: SecAggClient, stage: str, request: Any, value: np.ndarray | None
) -> ClientMessage:
    """Client ``client``'s message for ``stage`` given the server's request (``value``: its
    input in Z_{2^bits}, needed at the masked-input stage). Raises `ProtocolError` to refuse."""
    if stage == STAGES[0]:
        return client.advertise()
    if stage == STAGES[1]:
        return client.share_keys(request)
    if stage == STAGES[2]:
        if value is None:
            raise ProtocolError(f"client {client.id}: no input for this round")
        return client.masked_input(request, value)
    return client.unmask(request)


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


def drive_round(
    setup: RoundSetup, identities: Mapping[int, bytes], parties: Parties
) -> tuple[np.ndarray, tuple[int, ...], dict[int, str], float]:
    """The server's side of one round: (Σ of the survivors' inputs, survivors, rejected
    messages by claimed sender, seconds spent in the server's own code). Raises
    `ProtocolError` when the round fails (too few survivors or shares); nothing is revealed."""
    clock = [0.0]

    def timed(step, *args):
        started = time.perf_counter()
        try:
            return step(*args)
        finally:
            clock[0] += time.perf_counter() - started

    server = timed(SecAggServer, setup, dict(identities))

    def deliver(stage: str, requests: Mapping[int, Any]) -> None:
        for message in parties.exchange(stage, requests).values():
            # a rejected message is logged by the server; without an accepted one, its sender drops
            with contextlib.suppress(ProtocolError):
                timed(server.receive, message)

    deliver(STAGES[0], {c: setup for c in setup.clients})
    deliver(STAGES[1], timed(server.neighbour_keys))
    deliver(STAGES[2], timed(server.forwarded_shares))
    request = timed(server.unmask_request)
    deliver(STAGES[3], {c: request for c in request.survivors})
    total = timed(server.result)
    return total, request.survivors, dict(server.rejected), clock[0]


class InProcessParties:
    """Every client of the round as a `SecAggClient` in this process (the simulator)."""

    def __init__(
        self,
        setup: RoundSetup,
        inputs: Mapping[int, np.ndarray],
        federation: Federation,
        dropouts: Mapping[int, str] | None = None,
        tamper: Tamper | None = None,
    ):
        self.inputs, self.tamper = inputs, tamper
        self.dropouts = dict(dropouts or {})
        unknown = set(self.dropouts.values()) - set(STAGES)
        if unknown:
            raise ConfigError(f"dropout stages must be among {STAGES} (got {sorted(unknown)})")
        for c in setup.clients:
            federation.identity(c)
        self.clients: dict[int, SecAggClient] = {}
        self.seconds: dict[int, float] = {}
        for c in setup.clients:
            started = time.perf_counter()
            self.clients[c] = SecAggClient(c, federation.identity(c), setup, federation.public)
            self.seconds[c] = time.perf_counter() - started
        self.sent = {c: 0 for c in setup.clients}

    def exchange(self, stage: str, requests: Mapping[int, Any]) -> dict[int, ClientMessage]:
        out = {}
        for c, request in requests.items():
            if c not in self.clients:
                continue
            if self.dropouts.get(c) == stage:
                self.clients.pop(c)
                continue
            started = time.perf_counter()
            try:
                message = answer(self.clients[c], stage, request, self.inputs.get(c))
            except ProtocolError:  # an honest client refusing: it stops taking part
                self.clients.pop(c)
                continue
            finally:
                self.seconds[c] += time.perf_counter() - started
            message = self.tamper(message) if self.tamper else message
            if message is not None:
                self.sent[c] += wire_size(message)
                out[c] = message
        return out


def run_round(
    setup: RoundSetup,
    inputs: Mapping[int, np.ndarray],
    federation: Federation,
    dropouts: Mapping[int, str] | None = None,
    tamper: Tamper | None = None,
) -> SecAggReport:
    """One round in process. ``dropouts[c]`` names the stage at which client c stops responding
    (it never sends that stage's message); ``tamper`` may replace or suppress any message."""
    parties = InProcessParties(setup, inputs, federation, dropouts, tamper)
    total, survivors, rejected, seconds = drive_round(setup, federation.public, parties)
    return SecAggReport(total, survivors, seconds, parties.seconds, parties.sent, rejected)
