"""The attested aggregator in the FL chain: a client encoder link and a server aggregator link.

    encoder (clients):  inner encoder ─► attest the aggregator (fresh nonce each) ─► encrypt to
                        the attested key
    aggregator (host):  hand the sealed state and ciphertexts to the enclave ─► [inside: open,
                        inner aggregator (mean | robust | SecAgg+ server, + DP noise), seal]

Every client verifies the enclave's evidence before its update leaves it, and refuses with a
`ProtocolError` naming itself and the reason. Each client remembers the highest round counter
it has seen, so an aggregator restarted from rolled-back sealed state is refused. The link
states the host keeps are the sealed state blob (aggregator) and nothing (encoder).
"""

from __future__ import annotations

import logging

import torch

from veil.errors import ProtocolError
from veil.fl.links import ClientUpdates, Link
from veil.tee.channel import SealedUpdates, seal_updates
from veil.tee.enclave import AttestedAggregator
from veil.tee.errors import AttestationError
from veil.tee.evidence import FreshNonces, VerifiedAggregator, verify_aggregator
from veil.tee.verifier import AttestationPolicy

log = logging.getLogger("veil.tee")


class AttestingClients:
    """What each simulated client keeps between rounds: its nonces and the highest round
    counter it has seen from the aggregator."""

    def __init__(self, policy: AttestationPolicy):
        self.policy = policy
        self.nonces = FreshNonces()
        self.last_round: dict[int, int] = {}

    def attest(self, client: int, enclave: AttestedAggregator) -> VerifiedAggregator:
        """Client ``client`` checks ``enclave`` with a fresh nonce, or raises `ProtocolError`."""
        nonce = self.nonces.issue()
        try:
            verified = verify_aggregator(
                enclave.evidence(nonce),
                nonce,
                enclave.channel_public_key,
                self.policy,
                last_round=self.last_round.get(client, 0),
                nonces=self.nonces,
            )
        except AttestationError as refusal:
            raise ProtocolError(
                f"client {client} refused to send its update: {type(refusal).__name__}: {refusal}"
            ) from refusal
        self.last_round[client] = verified.round_counter
        return verified


def attested_encoder(enclave: AttestedAggregator, clients: AttestingClients, inner: Link) -> Link:
    """Client side: run ``inner``, attest the enclave (each client, fresh nonce), encrypt."""

    def apply(updates: ClientUpdates, state, key: torch.Generator):
        encoded, state, events = inner.apply(updates, state, key)
        verified = [clients.attest(int(c), enclave) for c in encoded.client_ids]
        if verified:
            log.info("%d clients: %s", len(verified), verified[0].describe())
        sealed = seal_updates(encoded, enclave.channel_public_key, enclave.round_counter)
        return sealed, state, events

    return Link(inner.init, apply)


def enclave_aggregator(enclave: AttestedAggregator) -> Link:
    """Server side: the enclave aggregates; the host keeps only the sealed state."""

    def apply(updates: SealedUpdates, sealed_state: bytes, key: torch.Generator):
        # ``key`` is the host's: the enclave draws its own noise, so the host cannot know it.
        return enclave.aggregate(updates, sealed_state)

    return Link(enclave.init, apply)
