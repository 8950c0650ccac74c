"""Key material of a SecAgg+ client, all from `cryptography`.

- Identity: a long-term Ed25519 key registered with the federation (a PKI, out of band). It
  signs every message a client sends, so the server can neither forge nor swap advertised keys.
- Per round: two X25519 key pairs — ``cipher`` (AES-GCM keys for the shares a client sends its
  neighbours through the server) and ``mask`` (pairwise mask seeds) — and, with the
  post-quantum hybrid option, an ML-KEM-768 key pair (FIPS 203).
- Every symmetric key is HKDF-SHA256 (RFC 5869) of the shared secrets, bound to the round id,
  the purpose and the two client ids.

Hybrid: an X25519 secret is combined with ML-KEM secrets in one HKDF input, so a key stays
secret while *either* X25519 or ML-KEM holds (against harvest-now-decrypt-later).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.errors import ProtocolError

KEY_BYTES = 32
NONCE_BYTES = 12
KEM_CIPHERTEXT_BYTES = 1088  # ML-KEM-768
KEM_PUBLIC_BYTES = 1184


def new_identity() -> Ed25519PrivateKey:
    """A fresh long-term identity key (register its public half with the federation)."""
    return Ed25519PrivateKey.generate()


def public_identity(identity: Ed25519PrivateKey) -> bytes:
    return identity.public_key().public_bytes_raw()


def verify(public_identity_key: bytes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is the identity key's Ed25519 signature of ``data``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_identity_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def x25519_private(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def x25519_public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes_raw()


def x25519_private_bytes(private: X25519PrivateKey) -> bytes:
    return private.private_bytes_raw()


def agree(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """The X25519 shared secret with ``peer_public``; a malformed or low-order key fails."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as error:
        raise ProtocolError(f"invalid X25519 public key: {error}") from None


def new_kem_key() -> mlkem.MLKEM768PrivateKey:
    return mlkem.MLKEM768PrivateKey.generate()


def kem_private_from_seed(seed: bytes) -> mlkem.MLKEM768PrivateKey:
    try:
        return mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
    except ValueError as error:
        raise ProtocolError(f"invalid ML-KEM-768 private key seed: {error}") from None


def kem_public_bytes(private: mlkem.MLKEM768PrivateKey) -> bytes:
    return private.public_key().public_bytes_raw()


def encapsulate(peer_public: bytes) -> tuple[bytes, bytes]:
    """(shared secret, ciphertext) for the holder of ML-KEM-768 public key ``peer_public``."""
    try:
        return mlkem.MLKEM768PublicKey.from_public_bytes(peer_public).encapsulate()
    except ValueError as error:
        raise ProtocolError(f"invalid ML-KEM-768 public key: {error}") from None


def decapsulate(private: mlkem.MLKEM768PrivateKey, ciphertext: bytes) -> bytes:
    if len(ciphertext) != KEM_CIPHERTEXT_BYTES:
        raise ProtocolError(f"an ML-KEM-768 ciphertext has {KEM_CIPHERTEXT_BYTES} bytes")
    return private.decapsulate(ciphertext)


def derive(secret: bytes, purpose: bytes, round_id: bytes, *client_ids: int) -> bytes:
    """HKDF-SHA256 → 32 bytes, bound to the purpose, the round and the client ids (in order)."""
    info = b"veil/secagg+/" + purpose + b"/" + round_id
    info += b"".join(c.to_bytes(8, "big") for c in client_ids)
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=info).derive(secret)


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """AES-256-GCM: a fresh random 96-bit nonce, then ciphertext and tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    """Inverse of `seal`; a modified ciphertext or wrong key raises `ProtocolError`."""
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except (InvalidTag, ValueError):
        raise ProtocolError(
            "a sealed share failed authentication (modified or misrouted)"
        ) from None
