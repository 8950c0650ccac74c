"""A simulated attestation platform, for development and tests: NO hardware protection.

It plays every party of Intel DCAP with local keys: a root CA, a PCK CA and a PCK certificate
(with the SGX extension), a quoting enclave's attestation key, and the PCS that signs TCB info
and QE identity. Its quotes are byte-for-byte in Intel's format, so the verifier runs exactly
the code it runs on real evidence; only the root differs. Nothing protects the "enclave" from
the host: the keys live in ordinary memory. Every claim, log line and report made with it says
so.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import logging
import secrets
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from veil.tee import ecdsa
from veil.tee.collateral import Collateral, signed_document
from veil.tee.quote import (
    EnclaveReport,
    Quote,
    QuoteSignature,
    TdReport,
    encode_quote,
    intel_header,
    signed_part,
)
from veil.tee.sgx_extensions import SGX_EXTENSION_OID, PckPlatform, encode_sgx_extension

log = logging.getLogger("veil.tee")
NO_PROTECTION = "SIMULATED enclave: NO hardware protection, the host can read its memory"
QE_SIGNER = hashlib.sha256(b"veil simulated quoting enclave").digest()
QE_ATTRIBUTES = bytes([0x11]) + bytes(15)
QE_SVN = 8
AUTH_DATA = bytes(range(32))
COLLATERAL_DAYS = 30
TCB_SVN = 5  # every simulated TCB component is at this level


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "veil (simulated, not Intel)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    common_name: str,
    public_key,
    issuer: x509.Certificate | None,
    issuer_key,
    now: datetime.datetime,
    days: int,
    ca: bool,
    extra: x509.ExtensionType | None = None,
) -> x509.Certificate:
    subject = _name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if extra is not None:
        builder = builder.add_extension(extra, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _tcb_level(svn: int, status: str, tee: str) -> dict:
    """A TCB level at which every component has SVN ``svn``."""
    components = [{"svn": svn} for _ in range(16)]
    tcb = {"sgxtcbcomponents": components, "pcesvn": svn}
    if tee == "tdx":
        tcb["tdxtcbcomponents"] = components
    return {"tcb": tcb, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": status}


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class SimulatedPlatform:
    """Local stand-ins for Intel's keys and services. ``tcb_status``: what its TCB info says
    about it; ``now``: when its certificates start (default: the current time)."""

    tcb_status: str = "UpToDate"
    now: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.UTC))
    fmspc: bytes = bytes.fromhex("00906ed50000")
    revoked: set[int] = field(default_factory=set)

    def __post_init__(self):
        self.root_key, self.pck_ca_key, self.pck_key = _key(), _key(), _key()
        self.signing_key, self.attestation_key = _key(), _key()
        self.sealing_root = secrets.token_bytes(32)  # the simulated CPU's fused secret
        self.platform = PckPlatform(
            self.fmspc, b"\x00\x00", (TCB_SVN,) * 16, TCB_SVN, bytes([TCB_SVN]) * 16
        )
        self.root = _certificate(
            "veil Simulated SGX Root CA", self.root_key.public_key(), None, self.root_key,
            self.now, 3650, ca=True,
        )  # fmt: skip
        self.pck_ca = _certificate(
            "veil Simulated PCK Platform CA", self.pck_ca_key.public_key(), self.root,
            self.root_key, self.now, 3650, ca=True,
        )  # fmt: skip
        extension = x509.UnrecognizedExtension(
            x509.ObjectIdentifier(SGX_EXTENSION_OID),
            encode_sgx_extension(self.platform, ppid=secrets.token_bytes(16)),
        )
        self.pck = _certificate(
            "veil Simulated PCK Certificate", self.pck_key.public_key(), self.pck_ca,
            self.pck_ca_key, self.now, 7 * 365, ca=False, extra=extension,
        )  # fmt: skip
        self.signing = _certificate(
            "veil Simulated TCB Signing", self.signing_key.public_key(), self.root, self.root_key,
            self.now, 7 * 365, ca=False,
        )  # fmt: skip

    def report(self, tee: str, measurement: bytes, report_data: bytes, debug: bool):
        """What the CPU would report for an enclave (SGX) or trust domain (TDX)."""
        if tee == "tdx":
            attributes = bytes([0x01 if debug else 0x00]) + bytes(7)
            return TdReport.build(
                tee_tcb_svn=bytes([TCB_SVN]) * 16,
                td_attributes=attributes,
                mr_td=measurement,
                report_data=report_data,
            )
        flags = 0x04 | 0x01 | (0x02 if debug else 0)  # MODE64BIT | INIT | DEBUG
        return EnclaveReport.build(
            cpu_svn=self.platform.cpu_svn,
            attributes=bytes([flags]) + bytes(7) + bytes([0x03]) + bytes(7),
            mr_enclave=measurement,
            mr_signer=hashlib.sha256(b"veil aggregator signer").digest(),
            report_data=report_data,
        )

    def quote(self, body: EnclaveReport | TdReport) -> bytes:
        """A DCAP quote of ``body``, signed by the simulated quoting enclave."""
        tee = "tdx" if isinstance(body, TdReport) else "sgx"
        key = ecdsa.raw_public_key(self.attestation_key.public_key())
        qe_report = EnclaveReport.build(
            cpu_svn=self.platform.cpu_svn,
            attributes=QE_ATTRIBUTES,
            mr_signer=QE_SIGNER,
            isv_prod_id=2 if tee == "tdx" else 1,
            isv_svn=QE_SVN,
            report_data=hashlib.sha256(key + AUTH_DATA).digest() + bytes(32),
        )
        header = intel_header(tee, QE_SVN, self.platform.pce_svn)
        signed = signed_part(header, body)
        chain = b"".join(c.public_bytes(Encoding.PEM) for c in (self.pck, self.pck_ca, self.root))
        signature = QuoteSignature(
            ecdsa.sign(self.attestation_key, signed),
            key,
            qe_report,
            qe_report.encode(),
            ecdsa.sign(self.pck_key, qe_report.encode()),
            AUTH_DATA,
            chain,
        )
        return encode_quote(Quote(header, body, signed, signature))

    def revoke_pck(self) -> None:
        """Put the PCK certificate on the PCK CA's revocation list."""
        self.revoked.add(self.pck.serial_number)

    def _crl(self, issuer, key, serials, now) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.subject)
            .last_update(now)
            .next_update(now + datetime.timedelta(days=COLLATERAL_DAYS))
        )
        for serial in serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
        return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM)

    def collateral(
        self,
        tee: str = "sgx",
        issued: datetime.datetime | None = None,
        qe_signer: bytes = QE_SIGNER,
    ) -> Collateral:
        """TCB info, QE identity and revocation lists, as Intel PCS would serve them
        (``issued``: when; default now)."""
        issued = issued or datetime.datetime.now(datetime.UTC)
        dates = {
            "issueDate": issued.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "nextUpdate": (issued + datetime.timedelta(days=COLLATERAL_DAYS)).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
        }
        levels = [_tcb_level(TCB_SVN, self.tcb_status, tee), _tcb_level(0, "OutOfDate", tee)]
        tcb_info = {
            "id": tee.upper(), "version": 3, **dates, "fmspc": self.fmspc.hex().upper(),
            "pceId": "0000", "tcbType": 0, "tcbEvaluationDataNumber": 1, "tcbLevels": levels,
        }  # fmt: skip
        identity = {
            "id": "TD_QE" if tee == "tdx" else "QE", "version": 2, **dates,
            "tcbEvaluationDataNumber": 1, "miscselect": "00000000", "miscselectMask": "FFFFFFFF",
            "attributes": QE_ATTRIBUTES.hex().upper(),
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": qe_signer.hex().upper(), "isvprodid": 2 if tee == "tdx" else 1,
            "tcbLevels": [{"tcb": {"isvsvn": QE_SVN}, "tcbStatus": "UpToDate"}],
        }  # fmt: skip
        chain = b"".join(c.public_bytes(Encoding.PEM) for c in (self.signing, self.root))
        crls = (
            self._crl(self.root, self.root_key, (), issued),
            self._crl(self.pck_ca, self.pck_ca_key, sorted(self.revoked), issued),
        )
        return Collateral(
            signed_document("tcbInfo", tcb_info, self.signing_key),
            signed_document("enclaveIdentity", identity, self.signing_key),
            chain,
            crls,
        )


@functools.cache
def shared_platform() -> SimulatedPlatform:
    """This process's one simulated CPU, on which every configured simulated enclave runs: its
    sealing secret lives in this process's memory only, so sealed state survives an aggregator
    restarted within the process (not a new process)."""
    return SimulatedPlatform()


class SimulatedBackend:
    """An "enclave" on a `SimulatedPlatform`: same flow as hardware, NO protection."""

    name = "simulated"
    hardware = False

    def __init__(
        self, platform: SimulatedPlatform, measurement: bytes, debug: bool = False, tee: str = "sgx"
    ):
        self.platform, self._measurement, self.debug, self.tee = platform, measurement, debug, tee
        log.warning("%s (simulated TEE backend, for development only)", NO_PROTECTION)

    @property
    def measurement(self) -> bytes:
        return self._measurement

    def quote(self, report_data: bytes) -> bytes:
        body = self.platform.report(self.tee, self._measurement, report_data, self.debug)
        return self.platform.quote(body)

    def collateral(self) -> Collateral:
        return self.platform.collateral(self.tee)

    def sealing_secret(self) -> bytes:
        return self.platform.sealing_root
