import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from veil.tee.errors import MalformedEvidence
from veil.tee.sgx_extensions import (
    SGX_EXTENSION_OID,
    PckPlatform,
    _oid,
    encode_sgx_extension,
    read_pck_platform,
)


def certificate(extension=None):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pck")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if extension is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID), extension),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256())


def test_oid_encoding_matches_intels_extension_bytes():
    # 1.2.840.113741.1.13.1 as it appears in every Intel PCK certificate
    assert _oid(SGX_EXTENSION_OID) == bytes.fromhex("2a864886f84d010d01")


def test_platform_round_trips_through_a_certificate():
    platform = PckPlatform(
        bytes.fromhex("00906ed50000"), b"\x00\x00", tuple(range(200, 216)), 13, bytes(range(16))
    )
    cert = certificate(encode_sgx_extension(platform, ppid=b"\x01" * 16))
    assert read_pck_platform(cert) == platform  # SVNs ≥ 128 need a leading zero byte


def test_certificate_without_the_extension_is_refused():
    with pytest.raises(MalformedEvidence, match="has no SGX extension"):
        read_pck_platform(certificate())


def test_truncated_extension_is_refused():
    platform = PckPlatform(bytes(6), bytes(2), (1,) * 16, 1, bytes(16))
    der = encode_sgx_extension(platform, ppid=bytes(16))
    truncated = der[:2] + der[2:40]  # claims more content than follows
    with pytest.raises(MalformedEvidence, match="truncated DER"):
        read_pck_platform(certificate(truncated))
