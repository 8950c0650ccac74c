"""Intel SGX and TDX DCAP quotes (ECDSA P-256): the byte layout, parsed and encoded.

Layout (Intel SGX ECDSA Quote Library API, appendix A.4; Intel TDX DCAP Quoting Library API,
appendix A.3), all integers little-endian::

    quote  = header (48) ‖ body ‖ u32 signature_data_len ‖ signature_data
    body   = SGX v3: ISV enclave report (384)       TDX v4: TD report (584)
    signature_data (v3) = ECDSA sig over header ‖ body (64) ‖ attestation key x ‖ y (64)
                        ‖ QE report (384) ‖ QE report sig (64) ‖ u16 auth_len ‖ auth data
                        ‖ u16 cert_type (5: PEM PCK chain) ‖ u32 cert_len ‖ cert data
    signature_data (v4) = sig (64) ‖ attestation key (64) ‖ u16 cert_type (6) ‖ u32 len ‖
                          [QE report ‖ QE report sig ‖ auth ‖ u16 5 ‖ u32 len ‖ PEM chain]

Parsing is strict: a wrong version, key type, TEE type, certification data type, or any byte
left over is `MalformedEvidence`. Nothing here checks a signature (see `veil.tee.verifier`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from veil.tee.errors import MalformedEvidence

HEADER_BYTES = 48
SGX_REPORT_BYTES = 384
TD_REPORT_BYTES = 584
ECDSA_P256 = 2
TEE_SGX, TEE_TDX = 0x00000000, 0x00000081
SGX_QUOTE_VERSION, TDX_QUOTE_VERSION = 3, 4
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
PCK_CHAIN_PEM = 5  # certification data: concatenated PEM PCK certificate chain
QE_REPORT_CERTIFICATION = 6  # certification data: QE report, its signature, auth data, chain
SGX_DEBUG_FLAG = 0x02  # ATTRIBUTES.FLAGS bit 1
TD_DEBUG_FLAG = 0x01  # TDATTRIBUTES bit 0

# (field name or None for reserved bytes, struct code), in the order of the structure.
HEADER_LAYOUT = (
    ("version", "H"),
    ("attestation_key_type", "H"),
    ("tee_type", "I"),
    ("qe_svn", "H"),
    ("pce_svn", "H"),
    ("qe_vendor_id", "16s"),
    ("user_data", "20s"),
)
SGX_REPORT_LAYOUT = (
    ("cpu_svn", "16s"),
    ("misc_select", "I"),
    (None, "12s"),
    ("isv_ext_prod_id", "16s"),
    ("attributes", "16s"),
    ("mr_enclave", "32s"),
    (None, "32s"),
    ("mr_signer", "32s"),
    (None, "32s"),
    ("config_id", "64s"),
    ("isv_prod_id", "H"),
    ("isv_svn", "H"),
    ("config_svn", "H"),
    (None, "42s"),
    ("isv_family_id", "16s"),
    ("report_data", "64s"),
)
TD_REPORT_LAYOUT = (
    ("tee_tcb_svn", "16s"),
    ("mr_seam", "48s"),
    ("mr_signer_seam", "48s"),
    ("seam_attributes", "8s"),
    ("td_attributes", "8s"),
    ("xfam", "8s"),
    ("mr_td", "48s"),
    ("mr_config_id", "48s"),
    ("mr_owner", "48s"),
    ("mr_owner_config", "48s"),
    ("rtmr0", "48s"),
    ("rtmr1", "48s"),
    ("rtmr2", "48s"),
    ("rtmr3", "48s"),
    ("report_data", "64s"),
)


def _struct(layout: tuple) -> struct.Struct:
    return struct.Struct("<" + "".join(code for _, code in layout))


def _decode(cls, layout: tuple, data: bytes):
    values = _struct(layout).unpack(data)
    return cls(**{name: v for (name, _), v in zip(layout, values, strict=True) if name})


def _encode(record, layout: tuple) -> bytes:
    return _struct(layout).pack(*(getattr(record, name) if name else b"" for name, _ in layout))


def _defaults(layout: tuple) -> dict:
    """Zero values for every field of ``layout`` (for building reports)."""
    zero = {"H": 0, "I": 0}
    return {name: zero.get(code, bytes(int(code[:-1] or 0))) for name, code in layout if name}


@dataclass(frozen=True)
class QuoteHeader:
    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True)
class EnclaveReport:
    """An SGX report body (``sgx_report_body_t``): of the ISV enclave, or of the QE."""

    cpu_svn: bytes
    misc_select: int
    isv_ext_prod_id: bytes
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes

    @property
    def debug(self) -> bool:
        return bool(self.attributes[0] & SGX_DEBUG_FLAG)

    @property
    def measurement(self) -> bytes:
        return self.mr_enclave

    @classmethod
    def build(cls, **values) -> EnclaveReport:
        """A report with every field zero except ``values``."""
        return cls(**{**_defaults(SGX_REPORT_LAYOUT), **values})

    def encode(self) -> bytes:
        return _encode(self, SGX_REPORT_LAYOUT)


@dataclass(frozen=True)
class TdReport:
    """A TDX TD report body (TD 1.0 quote body)."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    report_data: bytes

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes[0] & TD_DEBUG_FLAG)

    @property
    def measurement(self) -> bytes:
        return self.mr_td

    @classmethod
    def build(cls, **values) -> TdReport:
        return cls(**{**_defaults(TD_REPORT_LAYOUT), **values})

    def encode(self) -> bytes:
        return _encode(self, TD_REPORT_LAYOUT)


@dataclass(frozen=True)
class QuoteSignature:
    """The signature data: what proves the body came from a genuine platform."""

    signature: bytes  # over header ‖ body, by the attestation key
    attestation_key: bytes  # x ‖ y
    qe_report: EnclaveReport  # binds SHA-256(attestation key ‖ auth data) in its report data
    qe_report_bytes: bytes  # the QE report exactly as signed (reserved bytes included)
    qe_report_signature: bytes  # over the QE report, by the PCK key
    qe_auth_data: bytes
    pck_chain: bytes  # PEM: PCK certificate, intermediate CA, root CA


@dataclass(frozen=True)
class Quote:
    """A parsed quote; signatures are checked over the ``..._bytes`` fields, the bytes as
    received, not over a re-encoding (which would drop the reserved fields)."""

    header: QuoteHeader
    body: EnclaveReport | TdReport
    signed_bytes: bytes  # header ‖ body: what the attestation key signs
    signature: QuoteSignature

    @property
    def tee(self) -> str:
        return "tdx" if self.header.tee_type == TEE_TDX else "sgx"


def signed_part(header: QuoteHeader, body: EnclaveReport | TdReport) -> bytes:
    """header ‖ body, the bytes the attestation key signs."""
    return _encode(header, HEADER_LAYOUT) + body.encode()


def intel_header(tee: str, qe_svn: int = 0, pce_svn: int = 0) -> QuoteHeader:
    """The header Intel's quoting enclaves write for an ECDSA P-256 quote of ``tee``."""
    tdx = tee == "tdx"
    return QuoteHeader(
        TDX_QUOTE_VERSION if tdx else SGX_QUOTE_VERSION,
        ECDSA_P256,
        TEE_TDX if tdx else TEE_SGX,
        qe_svn,
        pce_svn,
        INTEL_QE_VENDOR_ID,
        bytes(20),
    )


class _Reader:
    """Consumes a byte string front to back; running short is `MalformedEvidence`."""

    def __init__(self, data: bytes):
        self.data, self.offset = data, 0

    def take(self, size: int, what: str) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise MalformedEvidence(
                f"quote too short: {what} needs {size} bytes at offset {self.offset}, "
                f"only {len(self.data) - self.offset} left"
            )
        chunk, self.offset = self.data[self.offset : end], end
        return chunk

    def integer(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def finish(self, what: str) -> None:
        if self.offset != len(self.data):
            raise MalformedEvidence(f"{len(self.data) - self.offset} unexpected bytes after {what}")


def _certification_data(reader: _Reader, expected: int) -> bytes:
    kind = reader.integer("H", "certification data type")
    if kind != expected:
        raise MalformedEvidence(
            f"certification data type {kind} is not supported here (expected {expected})"
        )
    return reader.take(reader.integer("I", "certification data size"), "certification data")


def _qe_part(reader: _Reader) -> tuple:
    """QE report (parsed and raw), its signature, auth data and the PEM chain (type 5)."""
    raw = reader.take(SGX_REPORT_BYTES, "QE report")
    signature = reader.take(64, "QE report signature")
    auth = reader.take(reader.integer("H", "QE auth data size"), "QE auth data")
    chain = _certification_data(reader, PCK_CHAIN_PEM)
    return _decode(EnclaveReport, SGX_REPORT_LAYOUT, raw), raw, signature, auth, chain


def parse_quote(data: bytes) -> Quote:
    """Parse an SGX v3 or TDX v4 ECDSA P-256 quote, or raise `MalformedEvidence`."""
    reader = _Reader(bytes(data))
    header = _decode(QuoteHeader, HEADER_LAYOUT, reader.take(HEADER_BYTES, "header"))
    expected = {SGX_QUOTE_VERSION: TEE_SGX, TDX_QUOTE_VERSION: TEE_TDX}
    if expected.get(header.version) != header.tee_type:
        raise MalformedEvidence(
            f"quote version {header.version} with TEE type {header.tee_type:#x} is not supported "
            "(SGX quotes are version 3, TDX quotes version 4)"
        )
    if header.attestation_key_type != ECDSA_P256:
        raise MalformedEvidence(
            f"attestation key type {header.attestation_key_type} is not ECDSA P-256 (2)"
        )
    if header.tee_type == TEE_TDX:
        body = _decode(TdReport, TD_REPORT_LAYOUT, reader.take(TD_REPORT_BYTES, "TD report"))
    else:
        body = _decode(EnclaveReport, SGX_REPORT_LAYOUT, reader.take(SGX_REPORT_BYTES, "report"))
    signed_bytes = reader.data[: reader.offset]
    length = reader.integer("I", "signature data length")
    signed = _Reader(reader.take(length, "signature data"))
    reader.finish("the signature data")
    signature, key = signed.take(64, "quote signature"), signed.take(64, "attestation key")
    if header.tee_type == TEE_TDX:
        inner = _Reader(_certification_data(signed, QE_REPORT_CERTIFICATION))
        qe_part = _qe_part(inner)
        inner.finish("the QE report certification data")
    else:
        qe_part = _qe_part(signed)
    signed.finish("the certification data")
    return Quote(header, body, signed_bytes, QuoteSignature(signature, key, *qe_part))


def _tagged(kind: int, data: bytes) -> bytes:
    return struct.pack("<HI", kind, len(data)) + data


def encode_quote(quote: Quote) -> bytes:
    """The bytes of ``quote`` in Intel's layout (inverse of `parse_quote`)."""
    s = quote.signature
    qe_part = (
        s.qe_report_bytes
        + s.qe_report_signature
        + struct.pack("<H", len(s.qe_auth_data))
        + s.qe_auth_data
        + _tagged(PCK_CHAIN_PEM, s.pck_chain)
    )
    if quote.header.tee_type == TEE_TDX:
        qe_part = _tagged(QE_REPORT_CERTIFICATION, qe_part)
    signature_data = s.signature + s.attestation_key + qe_part
    return quote.signed_bytes + struct.pack("<I", len(signature_data)) + signature_data
