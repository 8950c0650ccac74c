import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from veil.tee.ecdsa import public_key_from_raw, raw_public_key, sign, verifies


def test_raw_signature_verifies_and_matches_cryptographys_der_signature():
    key = ec.generate_private_key(ec.SECP256R1())
    signature = sign(key, b"quote")
    assert len(signature) == 64 and verifies(key.public_key(), signature, b"quote")
    assert not verifies(key.public_key(), signature, b"quotE")
    assert not verifies(key.public_key(), signature[:-1], b"quote")
    # independent reference: cryptography's own DER verification of (r, s)
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    der = encode_dss_signature(int.from_bytes(signature[:32]), int.from_bytes(signature[32:]))
    key.public_key().verify(der, b"quote", ec.ECDSA(hashes.SHA256()))


def test_raw_public_key_round_trips_and_bad_points_are_refused():
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert public_key_from_raw(raw_public_key(key)) == key
    with pytest.raises(ValueError, match="64 bytes"):
        public_key_from_raw(bytes(63))
    with pytest.raises(ValueError):
        public_key_from_raw(bytes(64))  # (0, 0) is not on the curve
