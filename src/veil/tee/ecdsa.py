"""ECDSA P-256 in the raw encodings of Intel's quote format, on top of ``cryptography``.

Quotes carry signatures as ``r ‖ s`` (2 × 32 bytes, big-endian) and public keys as ``x ‖ y``
(2 × 32 bytes); ``cryptography`` speaks DER signatures and key objects. These helpers convert.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

COORDINATE_BYTES = 32


def public_key_from_raw(raw: bytes) -> ec.EllipticCurvePublicKey:
    """The P-256 public key whose ``x ‖ y`` is ``raw`` (raises ValueError off the curve)."""
    if len(raw) != 2 * COORDINATE_BYTES:
        raise ValueError(f"a raw P-256 public key has 64 bytes (got {len(raw)})")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)


def raw_public_key(key: ec.EllipticCurvePublicKey) -> bytes:
    """``x ‖ y`` of a P-256 public key."""
    numbers = key.public_numbers()
    return numbers.x.to_bytes(COORDINATE_BYTES, "big") + numbers.y.to_bytes(COORDINATE_BYTES, "big")


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-SHA256 signature of ``data`` as ``r ‖ s``."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(COORDINATE_BYTES, "big") + s.to_bytes(COORDINATE_BYTES, "big")


def verifies(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` (``r ‖ s``) is a valid ECDSA-SHA256 signature of ``data``."""
    if len(signature) != 2 * COORDINATE_BYTES:
        return False
    r = int.from_bytes(signature[:COORDINATE_BYTES], "big")
    s = int.from_bytes(signature[COORDINATE_BYTES:], "big")
    try:
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
