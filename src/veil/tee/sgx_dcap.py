"""The Intel SGX DCAP back end: quotes and sealing keys from Gramine, collateral from Intel PCS.

Inside Gramine-SGX (manifest ``sgx.remote_attestation = "dcap"``) the enclave asks for a quote
through pseudo-files: it writes its 64 bytes of report data to
``/dev/attestation/user_report_data`` and reads the DCAP quote from ``/dev/attestation/quote``;
``/dev/attestation/keys/_sgx_mrenclave`` is a sealing key only this MRENCLAVE on this CPU can
derive (Gramine documentation, "Attestation and Secret Provisioning").

Collateral is fetched once by the operator from Intel's Provisioning Certification Service
(API v4) and kept in a folder; it is signed by Intel, so it may travel with the evidence::

    tcb_info.json          GET /sgx/certification/v4/tcb?fmspc=FMSPC        (body)
    qe_identity.json       GET /sgx/certification/v4/qe/identity             (body)
    tcb_signing_chain.pem  the TCB-Info-Issuer-Chain response header, URL-decoded
    *.crl                  optional: GET /sgx/certification/v4/pckcrl?ca=platform, root CA CRL
"""

from __future__ import annotations

from pathlib import Path

from veil.errors import ConfigError
from veil.tee.collateral import Collateral
from veil.tee.quote import parse_quote

GRAMINE_ATTESTATION = Path("/dev/attestation")
COLLATERAL_FILES = ("tcb_info.json", "qe_identity.json", "tcb_signing_chain.pem")


def load_collateral(folder: str | Path) -> Collateral:
    """The collateral files in ``folder`` (see the module docstring)."""
    folder = Path(folder)
    missing = [name for name in COLLATERAL_FILES if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f"collateral folder {folder} lacks {', '.join(missing)}: download them from Intel "
            "PCS (see docs/tee.md, 'Collateral')"
        )
    tcb_info, identity, chain = ((folder / name).read_bytes() for name in COLLATERAL_FILES)
    crls = tuple(path.read_bytes() for path in sorted(folder.glob("*.crl")))
    return Collateral(tcb_info, identity, chain, crls)


class GramineBackend:
    """Quotes and sealing from Gramine-SGX's ``/dev/attestation`` (``attestation_dir``)."""

    name = "sgx-dcap"
    hardware = True

    def __init__(self, collateral: str | Path, attestation_dir: str | Path = GRAMINE_ATTESTATION):
        self.attestation_dir = Path(attestation_dir)
        kind_file = self.attestation_dir / "attestation_type"
        if not kind_file.is_file():
            raise ConfigError(
                f"backend sgx-dcap must run inside Gramine-SGX ({kind_file} not found): start "
                "the aggregator with `gramine-sgx veil-server` after `veil tee build`, or use "
                "backend: simulated for development"
            )
        kind = kind_file.read_text().strip()
        if kind != "dcap":
            raise ConfigError(
                f"Gramine reports attestation type {kind!r}, not 'dcap': set "
                'sgx.remote_attestation = "dcap" in the manifest (veil tee build does)'
            )
        self._collateral = load_collateral(collateral)
        self._measurement = parse_quote(self.quote(bytes(64))).body.measurement

    @property
    def measurement(self) -> bytes:
        """This enclave's MRENCLAVE, as its own quote reports it."""
        return self._measurement

    def quote(self, report_data: bytes) -> bytes:
        (self.attestation_dir / "user_report_data").write_bytes(report_data)
        return (self.attestation_dir / "quote").read_bytes()

    def collateral(self) -> Collateral:
        return self._collateral

    def sealing_secret(self) -> bytes:
        return (self.attestation_dir / "keys" / "_sgx_mrenclave").read_bytes()
