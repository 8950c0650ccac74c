import struct

import pytest

from veil.tee.errors import MalformedEvidence
from veil.tee.quote import (
    HEADER_BYTES,
    SGX_REPORT_BYTES,
    TD_REPORT_BYTES,
    EnclaveReport,
    TdReport,
    encode_quote,
    intel_header,
    parse_quote,
    signed_part,
)
from veil.tee.simulated import SimulatedBackend

REPORT_DATA = bytes(range(100, 164))


def test_sgx_quote_round_trips_and_fields_sit_at_intel_offsets(backend):
    data = backend.quote(REPORT_DATA)
    quote = parse_quote(data)
    assert encode_quote(quote) == data
    assert quote.tee == "sgx" and quote.header.version == 3
    # Offsets of Gramine's sgx-quote.py example: attributes 96, MRENCLAVE 112, report data 368.
    assert data[112:144] == quote.body.mr_enclave == backend.measurement
    assert data[368:432] == quote.body.report_data == REPORT_DATA
    assert data[96] == quote.body.attributes[0] and not quote.body.debug
    assert quote.signed_bytes == data[: HEADER_BYTES + SGX_REPORT_BYTES]
    assert struct.unpack_from("<I", data, 432)[0] == len(data) - 436  # signature data length
    assert b"BEGIN CERTIFICATE" in quote.signature.pck_chain


def test_tdx_v4_quote_round_trips_with_qe_report_certification_data(platform):
    backend = SimulatedBackend(platform, bytes(range(48)), debug=True, tee="tdx")
    data = backend.quote(REPORT_DATA)
    quote = parse_quote(data)
    assert encode_quote(quote) == data
    assert quote.tee == "tdx" and quote.header.version == 4 and quote.body.debug
    assert quote.body.mr_td == bytes(range(48)) and quote.body.report_data == REPORT_DATA
    assert len(quote.signed_bytes) == HEADER_BYTES + TD_REPORT_BYTES
    kind = struct.unpack_from("<H", data, HEADER_BYTES + TD_REPORT_BYTES + 4 + 128)[0]
    assert kind == 6  # QE report certification data wraps the PCK chain


def test_report_layouts_have_the_specified_sizes():
    assert len(EnclaveReport.build().encode()) == SGX_REPORT_BYTES == 384
    assert len(TdReport.build().encode()) == TD_REPORT_BYTES == 584
    assert len(signed_part(intel_header("sgx"), EnclaveReport.build())) == 48 + 384


def test_debug_flags_are_attribute_bits():
    assert EnclaveReport.build(attributes=b"\x02" + bytes(15)).debug
    assert not EnclaveReport.build(attributes=b"\x05" + bytes(15)).debug
    assert TdReport.build(td_attributes=b"\x01" + bytes(7)).debug


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d[:40], "quote too short: header"),
        (lambda d: d[:500], "quote too short"),
        (lambda d: d + b"\x00", "unexpected bytes after the signature data"),
        (lambda d: struct.pack("<H", 5) + d[2:], "version 5 .* not supported"),
        (lambda d: d[:2] + struct.pack("<H", 3) + d[4:], "not ECDSA P-256"),
        (lambda d: d[:4] + struct.pack("<I", 0x81) + d[8:], "version 3 with TEE type 0x81"),
    ],
)
def test_malformed_quotes_are_refused_with_the_reason(backend, mutate, message):
    with pytest.raises(MalformedEvidence, match=message):
        parse_quote(mutate(backend.quote(REPORT_DATA)))


def test_unsupported_certification_data_type_is_refused(backend):
    data = bytearray(backend.quote(REPORT_DATA))
    quote = parse_quote(bytes(data))
    offset = 436 + 128 + 384 + 64 + 2 + len(quote.signature.qe_auth_data)
    data[offset : offset + 2] = struct.pack("<H", 3)  # encrypted PPID: not a chain
    with pytest.raises(MalformedEvidence, match="certification data type 3 is not supported"):
        parse_quote(bytes(data))
