"""The SGX extension of a PCK certificate: which platform, at which TCB level.

Intel's PCK certificates carry one X.509 extension, OID 1.2.840.113741.1.13.1, a DER
``SEQUENCE`` of ``(OID, value)`` pairs (Intel SGX PCK Certificate and CRL Profile, §1.3.5):
PPID, TCB (16 SGX component SVNs, the PCE SVN and the CPU SVN), PCE-ID, FMSPC and SGX type.
The TCB level decides the platform's TCB status against Intel's TCB info. ``cryptography``
hands the extension over as raw bytes; this module reads (and, for the simulated platform,
writes) exactly that structure, nothing more general.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from veil.tee.errors import MalformedEvidence

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
SEQUENCE, INTEGER, OCTET_STRING, OID, ENUMERATED = 0x30, 0x02, 0x04, 0x06, 0x0A
TCB_COMPONENTS = 16


@dataclass(frozen=True)
class PckPlatform:
    """What a PCK certificate says about its platform."""

    fmspc: bytes  # family-model-stepping-platform-custom SKU: selects the TCB info
    pce_id: bytes
    sgx_tcb_svns: tuple[int, ...]  # 16 component SVNs
    pce_svn: int
    cpu_svn: bytes


def _tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + value


def _read_tlv(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """(tag, value, offset after it) of the DER element at ``offset``."""
    try:
        tag, n = data[offset], data[offset + 1]
        offset += 2
        if n & 0x80:
            width = n & 0x7F
            n = int.from_bytes(data[offset : offset + width], "big")
            offset += width
    except IndexError:
        raise MalformedEvidence("PCK certificate SGX extension: truncated DER") from None
    if offset + n > len(data):
        raise MalformedEvidence("PCK certificate SGX extension: truncated DER")
    return tag, data[offset : offset + n], offset + n


def _elements(data: bytes) -> list[tuple[int, bytes]]:
    out, offset = [], 0
    while offset < len(data):
        tag, value, offset = _read_tlv(data, offset)
        out.append((tag, value))
    return out


def _oid(dotted: str) -> bytes:
    """DER content of an object identifier."""
    first, second, *rest = (int(p) for p in dotted.split("."))
    out = bytearray([40 * first + second])
    for arc in rest:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        out.extend(reversed(chunk))
    return bytes(out)


def _pairs(data: bytes) -> dict[bytes, tuple[int, bytes]]:
    """The ``SEQUENCE OF SEQUENCE {OID, value}`` in ``data``, keyed by the OID's DER content."""
    pairs = {}
    for tag, value in _elements(data):
        inner = _elements(value)
        if tag != SEQUENCE or len(inner) != 2 or inner[0][0] != OID:
            raise MalformedEvidence("PCK certificate SGX extension: expected (OID, value) pairs")
        pairs[inner[0][1]] = inner[1]
    return pairs


def _field(pairs: dict, arc: str, tag: int) -> bytes:
    found = pairs.get(_oid(f"{SGX_EXTENSION_OID}.{arc}"))
    if found is None or found[0] != tag:
        raise MalformedEvidence(f"PCK certificate SGX extension lacks {SGX_EXTENSION_OID}.{arc}")
    return found[1]


def read_pck_platform(certificate: x509.Certificate) -> PckPlatform:
    """The platform identity and TCB level in a PCK certificate's SGX extension."""
    try:
        raw = certificate.extensions.get_extension_for_oid(
            x509.ObjectIdentifier(SGX_EXTENSION_OID)
        ).value.value
    except x509.ExtensionNotFound:
        raise MalformedEvidence(
            "the PCK certificate has no SGX extension (1.2.840.113741.1.13.1): is it a PCK "
            "certificate?"
        ) from None
    _, content, _ = _read_tlv(raw, 0)
    top = _pairs(content)
    tcb = _pairs(_field(top, "2", SEQUENCE))
    svns = tuple(
        int.from_bytes(_field(tcb, f"2.{i}", INTEGER), "big") for i in range(1, TCB_COMPONENTS + 1)
    )
    return PckPlatform(
        fmspc=_field(top, "4", OCTET_STRING),
        pce_id=_field(top, "3", OCTET_STRING),
        sgx_tcb_svns=svns,
        pce_svn=int.from_bytes(_field(tcb, "2.17", INTEGER), "big"),
        cpu_svn=_field(tcb, "2.18", OCTET_STRING),
    )


def _integer(value: int) -> bytes:
    return value.to_bytes(value.bit_length() // 8 + 1, "big")  # room for the sign bit


def _pair(arc: str, tag: int, value: bytes) -> bytes:
    return _tlv(SEQUENCE, _tlv(OID, _oid(f"{SGX_EXTENSION_OID}.{arc}")) + _tlv(tag, value))


def encode_sgx_extension(platform: PckPlatform, ppid: bytes) -> bytes:
    """DER of the SGX extension for ``platform`` (SGX type 0, "Standard")."""
    tcb = [_pair(f"2.{i + 1}", INTEGER, _integer(v)) for i, v in enumerate(platform.sgx_tcb_svns)]
    tcb.append(_pair("2.17", INTEGER, _integer(platform.pce_svn)))
    tcb.append(_pair("2.18", OCTET_STRING, platform.cpu_svn))
    body = [
        _pair("1", OCTET_STRING, ppid),
        _pair("2", SEQUENCE, b"".join(tcb)),
        _pair("3", OCTET_STRING, platform.pce_id),
        _pair("4", OCTET_STRING, platform.fmspc),
        _pair("5", ENUMERATED, b"\x00"),
    ]
    return _tlv(SEQUENCE, b"".join(body))
