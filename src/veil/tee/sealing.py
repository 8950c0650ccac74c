"""Sealed state: the aggregator's state, encrypted for the enclave alone, with a round counter.

``key = HKDF-SHA256(platform sealing secret, info = "veil/tee/seal/v1" ‖ measurement)``; on
SGX the secret is Gramine's ``_sgx_mrenclave`` key (EGETKEY with the MRENCLAVE policy), so only
the same code on the same CPU derives it. A blob is ``magic ‖ round (8 bytes) ‖ AES-256-GCM(
payload)`` with magic and round as associated data: altering any byte, or opening it under
another measurement, fails authentication.

Rollback: the host stores the blobs, so it can hand an enclave an *old* one. SGX has no
trustworthy monotonic counter any more, so veil uses two lines of defence: a running enclave
refuses any blob older than the newest it has sealed or opened (`SealedStore`), and a restarted
one publishes its round counter in every attestation, so clients that saw a later round refuse
it (`veil.tee.evidence.verify_aggregator`, ``last_round``).
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.errors import ProtocolError
from veil.tee.errors import RollbackDetected, SealedStateRefused

MAGIC = b"veilseal"
NONCE_BYTES = 12
HEADER = struct.Struct(">8sQ")


def sealing_key(secret: bytes, measurement: bytes) -> bytes:
    """The 256-bit AES key bound to ``measurement`` (see the module docstring)."""
    info = b"veil/tee/seal/v1" + measurement
    return HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(secret)


def seal(key: bytes, round_counter: int, payload: bytes) -> bytes:
    """``payload`` sealed under ``key``, stamped with ``round_counter``."""
    header = HEADER.pack(MAGIC, round_counter)
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + AESGCM(key).encrypt(nonce, payload, header)


def unseal(key: bytes, blob: bytes) -> tuple[int, bytes]:
    """(round counter, payload) of a sealed blob, or `SealedStateRefused`."""
    if len(blob) < HEADER.size + NONCE_BYTES or blob[:8] != MAGIC:
        raise SealedStateRefused("this is not veil sealed state (bad header)")
    header = blob[: HEADER.size]
    _, round_counter = HEADER.unpack(header)
    nonce, ciphertext = (
        blob[HEADER.size : HEADER.size + NONCE_BYTES],
        blob[HEADER.size + NONCE_BYTES :],
    )
    try:
        return round_counter, AESGCM(key).decrypt(nonce, ciphertext, header)
    except InvalidTag:
        raise SealedStateRefused(
            "sealed state does not open: it was altered, or sealed by an enclave with another "
            "measurement or on another platform"
        ) from None


class SealedStore:
    """Seals and opens one enclave's state, never going back to an older round."""

    def __init__(self, key: bytes):
        self._key = key
        self.newest = -1  # highest round counter sealed or opened in this enclave's lifetime

    def seal(self, round_counter: int, payload: bytes) -> bytes:
        if round_counter <= self.newest:
            raise ProtocolError(
                f"round counter {round_counter} must exceed the last sealed one ({self.newest})"
            )
        self.newest = round_counter
        return seal(self._key, round_counter, payload)

    def unseal(self, blob: bytes) -> tuple[int, bytes]:
        round_counter, payload = unseal(self._key, blob)
        if round_counter < self.newest:
            raise RollbackDetected(
                f"the host handed back sealed state of round {round_counter}, older than round "
                f"{self.newest} this enclave already reached: refused as a rollback"
            )
        self.newest = round_counter
        return round_counter, payload
