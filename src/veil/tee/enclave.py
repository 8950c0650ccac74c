"""The aggregator inside the enclave: attestation evidence, sealed state, private aggregation.

Everything here is what runs *inside* the trusted boundary: the X25519 channel key (fresh at
every start, never leaves), the sealing key (bound to the measurement), the round counter, and
the inner aggregator chain (mean, robust rule, SecAgg+ server, DP noise) with its state. The
host only ever holds the sealed state blob and the encrypted updates. DP noise is drawn here
from `veil.randomness.noise_generator` — never from a seed the host chose — so noise added in
the enclave is central DP that does not require trusting the operator.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from veil.errors import ProtocolError
from veil.fl.links import Link
from veil.params import Params
from veil.randomness import noise_generator
from veil.tee.channel import SealedUpdates, open_updates
from veil.tee.evidence import EnclaveBackend, aggregator_evidence
from veil.tee.sealing import SealedStore, sealing_key

log = logging.getLogger("veil.tee")
ENCLAVE_NOISE_STREAM = 1 << 40  # test seeds: keep the enclave's stream apart from the host's


def _state_bytes(state: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _state_from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


class AttestedAggregator:
    """The enclave's side of the protocol around an inner aggregator link ``inner``.

    ``noise_seed_for_testing`` makes the enclave's DP noise reproducible (NOT private).
    """

    def __init__(
        self, backend: EnclaveBackend, inner: Link, noise_seed_for_testing: int | None = None
    ):
        self.backend, self.inner = backend, inner
        self.noise_seed_for_testing = noise_seed_for_testing
        self._channel = X25519PrivateKey.generate()
        self._sealing_key = sealing_key(backend.sealing_secret(), backend.measurement)
        self._store = SealedStore(self._sealing_key)
        self.round_counter: int | None = None  # known once state is created or resumed

    @property
    def channel_public_key(self) -> X25519PublicKey:
        return self._channel.public_key()

    def evidence(self, nonce: bytes, tls_public_key=None) -> bytes:
        """Evidence for a client's ``nonce`` at the current round counter. It binds the channel
        key the simulator's clients encrypt to; given the ``tls_public_key`` of a deployment's
        endpoint, it binds that key and the channel key beside it."""
        if self.round_counter is None:
            raise ProtocolError(
                "the enclave has no state yet: call init (new run) or resume (after a restart)"
            )
        if tls_public_key is None:
            return aggregator_evidence(
                self.backend, nonce, self.channel_public_key, self.round_counter
            )
        channel_key = self.channel_public_key.public_bytes_raw()
        return aggregator_evidence(
            self.backend, nonce, tls_public_key, self.round_counter, channel_key
        )

    def init(self, params: Params) -> bytes:
        """Fresh inner state for a new run, sealed at round 0 (clients that saw a later
        round of an earlier run refuse the restart)."""
        self.round_counter = 0
        self._store = SealedStore(self._sealing_key)
        return self._store.seal(0, _state_bytes(self.inner.init(params)))

    def resume(self, sealed_state: bytes) -> int:
        """After a restart: take up the host's sealed state; return its round counter."""
        self.round_counter, _ = self._store.unseal(sealed_state)
        log.info("enclave resumed at round %d from sealed state", self.round_counter)
        return self.round_counter

    def aggregate(
        self, updates: SealedUpdates, sealed_state: bytes
    ) -> tuple[Params, bytes, list[Any]]:
        """One round: open the state and the updates, run the inner chain with the enclave's
        own noise, seal the new state at the next round counter."""
        rounds_done, payload = self._store.unseal(sealed_state)
        if rounds_done != self.round_counter:
            raise ProtocolError(
                f"sealed state is at round {rounds_done}, the enclave attested round "
                f"{self.round_counter}: the host swapped the state between rounds"
            )
        plain = open_updates(updates, self._channel, rounds_done)
        device = next(iter(updates.template.values())).device
        key = noise_generator(
            self.noise_seed_for_testing, ENCLAVE_NOISE_STREAM + rounds_done + 1, device
        )
        aggregate, state, events = self.inner.apply(plain, _state_from_bytes(payload), key)
        self.round_counter = rounds_done + 1
        return aggregate, self._store.seal(self.round_counter, _state_bytes(state)), events
