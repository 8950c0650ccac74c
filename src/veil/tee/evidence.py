"""Evidence that binds the aggregator's key to its measurement (RA-TLS style), and its check.

The aggregator asks its enclave for a quote whose 64 bytes of report data are::

    SHA-256(DER SubjectPublicKeyInfo of its TLS key)
      ‖ SHA-256("veil/tee/fresh" ‖ nonce ‖ round ‖ channel key)

as Gramine's RA-TLS puts the key hash first (Knauth et al. 2018, "Integrating Remote
Attestation with Transport Layer Security"). A client that sends a fresh 32-byte nonce and
gets back evidence whose quote binds *the key of the TLS connection it is on* knows it talks
to the measured code itself, not to a relay; the nonce makes old evidence useless, and the
round counter (from the sealed state) lets clients notice a rolled-back aggregator. The
channel key (a deployment's: the enclave's raw X25519 key that sites HPKE-encrypt their
updates to; empty in the simulator, whose bound key is that channel key) travels in the
evidence and is bound beside the nonce.

Server side: `aggregator_evidence(backend, nonce, tls_public_key, round_counter)`.
Client side: `verify_aggregator(evidence, nonce, expected_tls_key, policy)`.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives import serialization

from veil.errors import ConfigError
from veil.tee.collateral import Collateral
from veil.tee.errors import (
    KeyBindingMismatch,
    MalformedEvidence,
    NonceReuse,
    ReplayedEvidence,
    RollbackDetected,
)
from veil.tee.verifier import AttestationPolicy, verify_quote

FORMAT = "veil-tee-evidence/1"
NONCE_BYTES = 32
CHANNEL_KEY_BYTES = 32  # raw X25519 public key
MAX_EVIDENCE_BYTES = 1 << 20


class EnclaveBackend(Protocol):
    """Where quotes, collateral and the sealing secret come from (`veil.tee.simulated`,
    `veil.tee.sgx_dcap`)."""

    name: str
    hardware: bool  # False: a simulation, no protection from the host

    @property
    def measurement(self) -> bytes: ...

    def quote(self, report_data: bytes) -> bytes: ...

    def collateral(self) -> Collateral: ...

    def sealing_secret(self) -> bytes: ...


def public_key_sha256(public_key) -> bytes:
    """SHA-256 of a ``cryptography`` public key's DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def freshness_digest(nonce: bytes, round_counter: int, channel_key: bytes = b"") -> bytes:
    counter = round_counter.to_bytes(8, "big")
    return hashlib.sha256(b"veil/tee/fresh" + nonce + counter + channel_key).digest()


def report_data_for(
    tls_public_key, nonce: bytes, round_counter: int, channel_key: bytes = b""
) -> bytes:
    """The 64 bytes of report data that bind ``tls_public_key``, ``nonce``, the round and the
    raw ``channel_key`` (if any)."""
    check_nonce(nonce)
    freshness = freshness_digest(nonce, round_counter, channel_key)
    return public_key_sha256(tls_public_key) + freshness


def check_nonce(nonce: bytes) -> None:
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise ConfigError(f"an attestation nonce is {NONCE_BYTES} random bytes (got {nonce!r:.40})")


class FreshNonces:
    """Issues nonces and accepts each exactly once (a verifier's memory of what it asked)."""

    def __init__(self):
        self._outstanding: set[bytes] = set()

    def issue(self) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        self._outstanding.add(nonce)
        return nonce

    def accept(self, nonce: bytes) -> None:
        if nonce not in self._outstanding:
            raise NonceReuse(
                "this nonce was already used or never issued here: ask FreshNonces.issue() "
                "for a fresh nonce for every attestation"
            )
        self._outstanding.remove(nonce)


@dataclass(frozen=True)
class Evidence:
    """What the aggregator sends: its quote, the collateral, and the nonce, round and channel
    key (raw X25519, or empty) it binds."""

    backend: str
    quote: bytes
    collateral: Collateral
    nonce: bytes
    round_counter: int
    channel_key: bytes = b""

    def to_bytes(self) -> bytes:
        document = {
            "format": FORMAT,
            "backend": self.backend,
            "quote": base64.b64encode(self.quote).decode(),
            "collateral": self.collateral.to_json(),
            "nonce": self.nonce.hex(),
            "round": self.round_counter,
        }
        if self.channel_key:
            document["channel_key"] = self.channel_key.hex()
        return json.dumps(document, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Evidence:
        if len(data) > MAX_EVIDENCE_BYTES:
            raise MalformedEvidence(f"evidence larger than {MAX_EVIDENCE_BYTES} bytes")
        try:
            document = json.loads(data)
            if document["format"] != FORMAT:
                raise MalformedEvidence(f"evidence format {document['format']!r} is not {FORMAT}")
            round_counter = document["round"]
            if not isinstance(round_counter, int) or round_counter < 0:
                raise MalformedEvidence("the evidence's round counter is not an integer ≥ 0")
            channel_key = bytes.fromhex(document.get("channel_key", ""))
            if len(channel_key) not in (0, CHANNEL_KEY_BYTES):
                raise MalformedEvidence(f"the channel key is not {CHANNEL_KEY_BYTES} bytes")
            return cls(
                str(document["backend"]),
                base64.b64decode(document["quote"], validate=True),
                Collateral.from_json(document["collateral"]),
                bytes.fromhex(document["nonce"]),
                round_counter,
                channel_key,
            )
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise MalformedEvidence("the evidence is not a veil attestation document") from None


def aggregator_evidence(
    backend: EnclaveBackend,
    nonce: bytes,
    tls_public_key,
    round_counter: int = 0,
    channel_key: bytes = b"",
) -> bytes:
    """Server side: evidence binding ``tls_public_key`` (the key of the TLS connection the
    client is on), the client's ``nonce``, the aggregator's round counter and (deployment) the
    raw X25519 ``channel_key`` the client will encrypt its update to."""
    quote = backend.quote(report_data_for(tls_public_key, nonce, round_counter, channel_key))
    document = Evidence(
        backend.name, quote, backend.collateral(), nonce, round_counter, channel_key
    )
    return document.to_bytes()


@dataclass(frozen=True)
class VerifiedAggregator:
    """An aggregator that passed attestation: what the client now knows about it."""

    measurement: bytes
    tee: str
    hardware: bool
    debug: bool
    tcb_status: str
    round_counter: int
    channel_key: bytes = b""  # raw X25519 key to encrypt updates to (deployment), or empty

    def describe(self) -> str:
        """One line for logs; says plainly when no hardware protection is in place."""
        prefix = "" if self.hardware else "SIMULATED attestation, NO hardware protection: "
        debug = ", DEBUG enclave" if self.debug else ""
        return (
            f"{prefix}aggregator attested ({self.tee.upper()} measurement "
            f"{self.measurement.hex()[:16]}…, TCB {self.tcb_status}, round {self.round_counter}"
            f"{debug})"
        )


def verify_aggregator(
    evidence: bytes,
    nonce: bytes,
    expected_tls_key,
    policy: AttestationPolicy,
    *,
    last_round: int = 0,
    nonces: FreshNonces | None = None,
    now: datetime.datetime | None = None,
) -> VerifiedAggregator:
    """Client side: accept the aggregator behind ``expected_tls_key`` (the public key of the
    TLS connection, or of the channel the update will be encrypted to) or raise the
    `AttestationError` that says why not. ``last_round``: the highest round counter this client
    has seen from the aggregator (a lower one is a rollback)."""
    check_nonce(nonce)
    if nonces is not None:
        nonces.accept(nonce)
    document = Evidence.from_bytes(evidence)
    if document.nonce != nonce:
        raise ReplayedEvidence(
            "the evidence answers another nonce than this connection's: replayed or relayed "
            "evidence"
        )
    attested = verify_quote(document.quote, document.collateral, policy, now)
    if attested.report_data[:32] != public_key_sha256(expected_tls_key):
        raise KeyBindingMismatch(
            "the quote binds another public key than the one of this connection: someone "
            "between the client and the enclave (or a different server) holds this key"
        )
    freshness = freshness_digest(nonce, document.round_counter, document.channel_key)
    if attested.report_data[32:] != freshness:
        raise ReplayedEvidence(
            "the quote was made for another nonce or round counter (or channel key) than the "
            "evidence states: replayed or altered evidence"
        )
    if document.round_counter < last_round:
        raise RollbackDetected(
            f"the aggregator is at round {document.round_counter}, but this client already saw "
            f"round {last_round}: its sealed state was rolled back"
        )
    return VerifiedAggregator(
        attested.measurement,
        attested.quote.tee,
        policy.hardware and document.backend != "simulated",
        attested.quote.body.debug,
        attested.tcb_status,
        document.round_counter,
        document.channel_key,
    )
