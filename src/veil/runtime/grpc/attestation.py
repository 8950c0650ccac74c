"""The attested aggregator over gRPC: the coordinator answers for the enclave it hosts, and each
site verifies it on the TLS connection it is on before its update leaves (RA-TLS: Knauth et al.
2018, "Integrating Remote Attestation with Transport Layer Security").

    site                                          coordinator (hosts the enclave)
    Join, mTLS checked against the CA   ───────►  JoinReply.attested_certificate (PEM)
    open a channel that trusts that certificate alone: every handshake on it proves the peer
    holds its key, so the expected TLS key is the key of the connection, not of a message
    Attest(fresh nonce)                 ───────►  evidence binding SHA-256(SPKI of that
                                        ◄───────  certificate), the nonce, the round counter
                                                  and the enclave's X25519 channel key
    verify_aggregator(evidence, nonce, pinned key, the site's policy, last_round)
    Push(TrainResult.sealed): HPKE(weight ‖ update) to the channel key, for that round counter

Threat model: with ``sgx-dcap`` all of ``veil server`` runs inside Gramine-SGX, so its TLS key
must be made inside the enclave and never leave it; with ``simulated`` the host's certificate
key is bound and nothing is protected from the host. Either way the update is sealed to the
enclave's channel key, so what relays it (gRPC, the task board, the checkpoints) sees only
ciphertexts, their sizes and the FedAvg weights.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding

from veil.config import RunConfig
from veil.errors import ConfigError, ProtocolError
from veil.fl.links import ClientUpdates
from veil.report import write_json_atomic
from veil.runtime.certs import Credentials
from veil.runtime.grpc import veil_pb2 as pb
from veil.tee.channel import seal_updates
from veil.tee.config import TeeConfig
from veil.tee.enclave import AttestedAggregator
from veil.tee.errors import SealedStateRefused
from veil.tee.evidence import VerifiedAggregator, check_nonce
from veil.tee.federated import attestation_policy
from veil.tee.simulated import SimulatedBackend
from veil.tee.verifier import AttestationPolicy

log = logging.getLogger("veil.tee")


class EnclaveNotReady(ProtocolError):
    """The enclave has not taken up the host's sealed state yet (answered UNAVAILABLE: retry)."""


def attested_certificate(pem: bytes) -> x509.Certificate:
    """The one certificate a site may pin: exactly one, and not a CA (a pinned CA would admit
    every certificate it signs); `ProtocolError` otherwise."""
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ProtocolError("the attested certificate is not PEM") from None
    if len(certificates) != 1:
        raise ProtocolError(
            f"the coordinator named {len(certificates)} attested certificates, not exactly one"
        )
    try:
        is_ca = certificates[0].extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if is_ca:
        raise ProtocolError("the attested certificate is a CA: a site pins a server's own")
    return certificates[0]


class EnclaveEndpoint:
    """The coordinator's side: the ``enclave`` it hosts answers each site's nonce with evidence
    binding the key of this endpoint's TLS certificate (from ``credentials``)."""

    def __init__(self, enclave: AttestedAggregator, credentials: Credentials | None):
        if credentials is None:
            raise ConfigError(
                "aggregation.tee needs mTLS (--certs): the attestation evidence binds the "
                "server certificate's key, and a plaintext server has none"
            )
        certificate = x509.load_pem_x509_certificate(credentials.certificate)
        self.enclave = enclave
        self.certificate = certificate.public_bytes(Encoding.PEM)  # the leaf only
        self._tls_key = certificate.public_key()
        self._lock = threading.Lock()  # one quote at a time (Gramine: write, then read)
        self._resumed = False

    def resume(self, sealed_state: bytes) -> int:
        """Take up the host's sealed state (a new run's or a checkpoint's) before answering
        the first attestation; return its round counter."""
        with self._lock:
            try:
                counter = self.enclave.resume(sealed_state)
            except SealedStateRefused as refusal:
                if self.enclave.backend.hardware:
                    raise
                raise ConfigError(
                    f"{refusal}. The simulated platform's sealing secret lives in one process's "
                    "memory, so a new `veil server` process cannot open what an earlier one "
                    "sealed: use a new --out folder (sgx-dcap: the CPU derives the same key "
                    "again)"
                ) from refusal
            self._resumed = True
        return counter

    def evidence(self, nonce: bytes) -> bytes:
        """Evidence for a site's ``nonce`` (`ConfigError` if it is not a nonce,
        `EnclaveNotReady` before `resume`)."""
        check_nonce(nonce)
        with self._lock:
            if not self._resumed:
                raise EnclaveNotReady(
                    "the enclave has not taken up its sealed state yet: try again shortly"
                )
            return self.enclave.evidence(nonce, self._tls_key)

    def join_reply_fields(self) -> dict[str, bytes]:
        """What `JoinReply` tells a site: the certificate to pin and, for the simulated
        backend only, its test root."""
        backend = self.enclave.backend
        root = b""
        if isinstance(backend, SimulatedBackend):
            root = backend.platform.root.public_bytes(Encoding.PEM)
        return {"attested_certificate": self.certificate, "simulated_root": root}


def site_policy(
    config: RunConfig, own: TeeConfig | None, joined: pb.JoinReply
) -> AttestationPolicy:
    """The policy a site applies: its ``own`` ``aggregation.tee`` settings, or else those of the
    coordinator's ``config`` (which lets the coordinator choose what the site accepts: logged).
    A simulated backend's test root comes from the coordinator: NO protection."""
    tee = own or config.aggregation.tee
    if own is None:
        log.warning(
            "the attestation policy comes from the coordinator's run config (measurement %s): "
            "give the site its own (SiteOptions.tee) so the coordinator cannot choose it",
            tee.measurement,
        )
    root = None
    if tee.backend == "simulated":
        if not joined.simulated_root:
            raise ProtocolError("the coordinator sent no simulated attestation root")
        try:
            root = x509.load_pem_x509_certificate(joined.simulated_root)
        except ValueError:
            raise ProtocolError("the coordinator's simulated attestation root is not PEM") from None
        log.warning("SIMULATED attestation: the test root comes from the coordinator")
    return attestation_policy(tee, config, root)


def read_round_counter(path: Path | None) -> int:
    """The highest enclave round counter a site stored in ``path`` (0: none yet)."""
    if path is None or not path.exists():
        return 0
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["aggregator_round"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{path} does not hold an aggregator round counter: restore it, or delete it if "
            "this site never took part in this run"
        ) from None


def write_round_counter(path: Path | None, counter: int) -> None:
    """Store ``counter`` in ``path`` (atomically; nothing when ``path`` is None)."""
    if path is not None:
        write_json_atomic({"aggregator_round": counter}, path)


def sealed_update(updates: ClientUpdates, verified: VerifiedAggregator) -> pb.SealedUpdate:
    """A site's one-client batch ``updates`` encrypted to the ``verified`` enclave's channel
    key for its round counter."""
    if not verified.channel_key:
        raise ProtocolError("the evidence binds no channel key to encrypt the update to")
    key = X25519PublicKey.from_public_bytes(verified.channel_key)
    sealed = seal_updates(updates, key, verified.round_counter)
    return pb.SealedUpdate(ciphertext=sealed.ciphertexts[0], round_counter=sealed.round_counter)
