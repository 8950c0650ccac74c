import dataclasses
import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.errors import ConfigError
from veil.tee.errors import (
    AttestationError,
    CertificateExpired,
    CertificateRevoked,
    CollateralExpired,
    CollateralInvalid,
    DebugEnclaveRefused,
    MeasurementNotAllowed,
    QuoteSignatureInvalid,
    QuotingEnclaveRefused,
    TcbStatusRefused,
    UnknownCertificate,
)
from veil.tee.quote import parse_quote
from veil.tee.simulated import SimulatedBackend, SimulatedPlatform
from veil.tee.verifier import AttestationPolicy, verify_quote

from .conftest import MEASUREMENT, NOW

REPORT_DATA = bytes(range(64))


def test_genuine_sgx_quote_passes(backend, platform, policy):
    attested = verify_quote(backend.quote(REPORT_DATA), platform.collateral(), policy, NOW)
    assert attested.measurement == MEASUREMENT and attested.report_data == REPORT_DATA
    assert (attested.tcb_status, attested.qe_tcb_status) == ("UpToDate", "UpToDate")


def test_genuine_tdx_quote_passes(platform):
    backend = SimulatedBackend(platform, bytes(48), tee="tdx")
    policy = AttestationPolicy(platform.root, frozenset({bytes(48)}), hardware=False)
    attested = verify_quote(backend.quote(REPORT_DATA), backend.collateral(), policy, NOW)
    assert attested.quote.tee == "tdx" and attested.tcb_status == "UpToDate"


def signed_region_end(quote_bytes: bytes) -> int:
    """Offset where the PEM chain starts: everything before it is covered by a signature."""
    return quote_bytes.index(b"-----BEGIN")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_altered_byte_before_the_chain_is_refused(backend, platform, policy, data):
    quote = bytearray(backend.quote(REPORT_DATA))
    position = data.draw(st.integers(0, signed_region_end(bytes(quote)) - 7))
    quote[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(AttestationError):
        verify_quote(bytes(quote), platform.collateral(), policy, NOW)


def test_altered_body_fails_the_quote_signature(backend, platform, policy):
    quote = bytearray(backend.quote(REPORT_DATA))
    quote[112] ^= 1  # one bit of MRENCLAVE
    with pytest.raises(QuoteSignatureInvalid, match="quote bytes were altered"):
        verify_quote(bytes(quote), platform.collateral(), policy, NOW)
    quote = bytearray(backend.quote(REPORT_DATA))
    quote[48 + 20] ^= 1  # a reserved byte: signatures cover the bytes as received
    with pytest.raises(QuoteSignatureInvalid, match="quote bytes were altered"):
        verify_quote(bytes(quote), platform.collateral(), policy, NOW)


def test_altered_qe_report_and_attestation_key_are_refused(backend, platform, policy):
    data = backend.quote(REPORT_DATA)
    qe_report_at = 436 + 128
    tampered = bytearray(data)
    tampered[qe_report_at + 64] ^= 1  # QE MRENCLAVE
    with pytest.raises(QuoteSignatureInvalid, match="QE report is not signed"):
        verify_quote(bytes(tampered), platform.collateral(), policy, NOW)
    tampered = bytearray(data)
    tampered[qe_report_at + 384 + 64 + 2] ^= 1  # QE auth data, hashed into the QE report
    with pytest.raises(QuoteSignatureInvalid, match="does not certify this attestation key"):
        verify_quote(bytes(tampered), platform.collateral(), policy, NOW)


def test_altered_certificate_is_refused(backend, platform, policy):
    data = backend.quote(REPORT_DATA)
    start = data.index(b"-----BEGIN CERTIFICATE-----\n") + 28 + 200  # inside the PCK's base64
    flipped = data[:start] + (b"B" if data[start : start + 1] != b"B" else b"C") + data[start + 1 :]
    with pytest.raises(AttestationError):
        verify_quote(flipped, platform.collateral(), policy, NOW)


def test_wrong_measurement_is_not_allowed(platform, policy):
    other = SimulatedBackend(platform, bytes(32))
    with pytest.raises(MeasurementNotAllowed, match="does not run the published code"):
        verify_quote(other.quote(REPORT_DATA), platform.collateral(), policy, NOW)


def test_debug_enclave_is_refused_in_production_mode_only(platform, policy):
    debug = SimulatedBackend(platform, MEASUREMENT, debug=True)
    with pytest.raises(DebugEnclaveRefused, match="DEBUG enclave"):
        verify_quote(debug.quote(REPORT_DATA), platform.collateral(), policy, NOW)
    development = dataclasses.replace(policy, allow_debug=True)
    assert verify_quote(debug.quote(REPORT_DATA), platform.collateral(), development, NOW)


def test_out_of_date_platform_is_refused_unless_accepted():
    platform = SimulatedPlatform(tcb_status="OutOfDate", now=NOW)
    backend = SimulatedBackend(platform, MEASUREMENT)
    policy = AttestationPolicy(platform.root, frozenset({MEASUREMENT}))
    with pytest.raises(TcbStatusRefused, match="platform's TCB status is OutOfDate"):
        verify_quote(backend.quote(REPORT_DATA), platform.collateral(), policy, NOW)
    lenient = dataclasses.replace(
        policy, accepted_tcb_statuses=frozenset({"UpToDate", "OutOfDate"})
    )
    assert verify_quote(backend.quote(REPORT_DATA), platform.collateral(), lenient, NOW)


def test_impostor_quoting_enclave_is_refused(backend, platform, policy):
    collateral = platform.collateral(qe_signer=bytes(32))
    with pytest.raises(QuotingEnclaveRefused, match="not a genuine quoting enclave"):
        verify_quote(backend.quote(REPORT_DATA), collateral, policy, NOW)


def test_quote_from_another_platform_root_is_unknown(backend, platform):
    stranger = SimulatedPlatform(now=NOW)
    policy = AttestationPolicy(stranger.root, frozenset({MEASUREMENT}))
    with pytest.raises(UnknownCertificate, match="not at the configured root"):
        verify_quote(backend.quote(REPORT_DATA), platform.collateral(), policy, NOW)


def test_expired_certificates_and_collateral_are_refused(backend, platform, policy):
    with pytest.raises(CertificateExpired, match="is expired"):
        verify_quote(
            backend.quote(REPORT_DATA),
            platform.collateral(),
            policy,
            NOW + datetime.timedelta(days=3000),
        )
    with pytest.raises(CollateralExpired, match="fetch fresh collateral"):
        verify_quote(
            backend.quote(REPORT_DATA),
            platform.collateral(),
            policy,
            NOW + datetime.timedelta(days=40),
        )


def test_revoked_platform_is_refused():
    platform = SimulatedPlatform(now=NOW)
    platform.revoke_pck()
    backend = SimulatedBackend(platform, MEASUREMENT)
    policy = AttestationPolicy(platform.root, frozenset({MEASUREMENT}))
    with pytest.raises(CertificateRevoked):
        verify_quote(backend.quote(REPORT_DATA), platform.collateral(), policy, NOW)


def test_collateral_missing_fields_is_invalid(backend, platform, policy):
    from veil.tee.collateral import signed_document

    body = {
        "id": "SGX",
        "fmspc": "00906ed50000",
        "nextUpdate": "2099-01-01T00:00:00Z",
        "tcbLevels": [{"tcbStatus": "UpToDate"}],
    }
    collateral = dataclasses.replace(
        platform.collateral(), tcb_info=signed_document("tcbInfo", body, platform.signing_key)
    )
    with pytest.raises(CollateralInvalid, match="lacks an expected field"):
        verify_quote(backend.quote(REPORT_DATA), collateral, policy, NOW)


def test_policy_refuses_bad_settings(platform):
    with pytest.raises(ConfigError, match="allowlist is empty"):
        AttestationPolicy(platform.root, frozenset())
    with pytest.raises(ConfigError, match=r"must be 32 bytes .* or 48 bytes"):
        AttestationPolicy(platform.root, frozenset({bytes(20)}))
    with pytest.raises(ConfigError, match="unknown TCB status \\['Fine'\\]"):
        AttestationPolicy(platform.root, frozenset({MEASUREMENT}), frozenset({"Fine"}))


def test_parsed_quote_exposes_the_checked_measurement(backend):
    assert parse_quote(backend.quote(REPORT_DATA)).body.measurement == MEASUREMENT
