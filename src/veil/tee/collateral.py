"""Attestation collateral: Intel's signed TCB info and quoting-enclave identity.

Intel's Provisioning Certification Service publishes, per platform family (FMSPC), a *TCB
info* document listing TCB levels, newest first, each with a status (``UpToDate``,
``SWHardeningNeeded``, ``ConfigurationNeeded``, ``OutOfDate``, ``Revoked``, ...), and a *QE
identity* naming the genuine quoting enclave (MRSIGNER, ISVPRODID, attribute masks) with its own
TCB levels. Both are JSON ``{"tcbInfo" | "enclaveIdentity": BODY, "signature": HEX}``, where
HEX is the ECDSA P-256 signature (``r ‖ s``) of BODY's exact bytes by the TCB Signing
certificate, which chains to the root (Intel PCS API v4; TCB info v3, identity v2).

A platform's TCB status is that of the first level whose every SGX component SVN and PCE SVN
(and, for TDX, every TEE TCB SVN) is at most the platform's; no such level: ``Unrecognized``.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
from dataclasses import dataclass

from veil.tee import ecdsa
from veil.tee.certificates import load_chain, load_crl, verify_chain
from veil.tee.errors import (
    CollateralExpired,
    CollateralInvalid,
    MalformedEvidence,
    QuotingEnclaveRefused,
)
from veil.tee.quote import EnclaveReport, Quote, TdReport
from veil.tee.sgx_extensions import PckPlatform

TCB_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)
UNRECOGNIZED = "Unrecognized"
_SIGNED = re.compile(
    rb'^\s*\{"(tcbInfo|enclaveIdentity)":(\{.*\}),"signature":"([0-9a-fA-F]+)"\}\s*$', re.S
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


@dataclass(frozen=True)
class Collateral:
    """What a verifier needs besides the quote; every part is signed, so it may travel with
    the evidence. ``crls``: revocation lists (PEM or DER) of the root and PCK CAs."""

    tcb_info: bytes
    qe_identity: bytes
    signing_chain: bytes  # PEM: TCB Signing certificate, root
    crls: tuple[bytes, ...] = ()

    def to_json(self) -> dict:
        return {
            "tcb_info": _b64(self.tcb_info),
            "qe_identity": _b64(self.qe_identity),
            "signing_chain": _b64(self.signing_chain),
            "crls": [_b64(c) for c in self.crls],
        }

    @classmethod
    def from_json(cls, data: dict) -> Collateral:
        try:
            return cls(
                _unb64(data["tcb_info"]),
                _unb64(data["qe_identity"]),
                _unb64(data["signing_chain"]),
                tuple(_unb64(c) for c in data.get("crls", [])),
            )
        except (KeyError, TypeError, ValueError):
            raise MalformedEvidence("the evidence's collateral does not parse") from None


def signed_document(body_name: str, body: dict, signer) -> bytes:
    """``{"body_name": body, "signature": …}`` signed by ``signer`` (the simulated PCS)."""
    raw = json.dumps(body, separators=(",", ":")).encode()
    signature = ecdsa.sign(signer, raw).hex()
    return b'{"' + body_name.encode() + b'":' + raw + b',"signature":"' + signature.encode() + b'"}'


def _parse_time(value: str, what: str) -> datetime.datetime:
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        raise CollateralInvalid(f"{what} has no valid date ({value!r})") from None


def open_document(raw: bytes, body_name: str, collateral: Collateral, root, now) -> dict:
    """The body of a signed collateral document, after checking its signer's chain to
    ``root``, its signature and its freshness at ``now``."""
    match = _SIGNED.match(raw)
    if match is None or match.group(1).decode() != body_name:
        raise CollateralInvalid(f"the collateral has no signed {body_name} document")
    chain = load_chain(collateral.signing_chain)
    crls = [load_crl(c) for c in collateral.crls]
    signer = verify_chain(chain, root, now, crls)
    if not ecdsa.verifies(
        signer.public_key(), bytes.fromhex(match.group(3).decode()), match.group(2)
    ):
        raise CollateralInvalid(
            f"the {body_name} signature does not verify: the document was altered"
        )
    body = json.loads(match.group(2))
    next_update = _parse_time(body.get("nextUpdate"), body_name)
    if now > next_update:
        raise CollateralExpired(
            f"{body_name} expired at {next_update:%Y-%m-%d %H:%M} UTC: fetch fresh collateral "
            "from Intel PCS (or the simulated platform)"
        )
    return body


def _svns(components: list[dict]) -> tuple[int, ...]:
    return tuple(int(c["svn"]) for c in components)


def tcb_status(tcb_info: dict, platform: PckPlatform, quote: Quote) -> str:
    """The platform's TCB status under ``tcb_info`` (see the module docstring)."""
    expected_id = "TDX" if quote.tee == "tdx" else "SGX"
    if tcb_info.get("id", "SGX") != expected_id:
        raise CollateralInvalid(f"TCB info is for {tcb_info.get('id')}, the quote is {expected_id}")
    if bytes.fromhex(tcb_info.get("fmspc", "")) != platform.fmspc:
        raise CollateralInvalid(
            f"TCB info is for FMSPC {tcb_info.get('fmspc')}, the platform's is "
            f"{platform.fmspc.hex()}: fetch the TCB info of this platform"
        )
    tee_svns = tuple(quote.body.tee_tcb_svn) if isinstance(quote.body, TdReport) else None
    for level in tcb_info.get("tcbLevels", []):
        tcb = level["tcb"]
        sgx = _svns(tcb["sgxtcbcomponents"])
        if any(mine < theirs for mine, theirs in zip(platform.sgx_tcb_svns, sgx, strict=True)):
            continue
        if platform.pce_svn < int(tcb["pcesvn"]):
            continue
        if tee_svns is not None:
            tdx = _svns(tcb.get("tdxtcbcomponents", []))
            if len(tdx) != len(tee_svns) or any(m < t for m, t in zip(tee_svns, tdx, strict=True)):
                continue
        return level["tcbStatus"]
    return UNRECOGNIZED


def _masked(value: bytes, mask: bytes) -> bytes:
    return bytes(a & b for a, b in zip(value, mask, strict=True))


def quoting_enclave_status(identity: dict, report: EnclaveReport) -> str:
    """The QE's TCB status, after checking it is the QE ``identity`` names."""
    misc = report.misc_select.to_bytes(4, "little")
    checks = {
        "MRSIGNER": report.mr_signer == bytes.fromhex(identity["mrsigner"]),
        "ISVPRODID": report.isv_prod_id == int(identity["isvprodid"]),
        "MISCSELECT": _masked(misc, bytes.fromhex(identity["miscselectMask"]))
        == bytes.fromhex(identity["miscselect"]),
        "ATTRIBUTES": _masked(report.attributes, bytes.fromhex(identity["attributesMask"]))
        == bytes.fromhex(identity["attributes"]),
    }
    wrong = [name for name, ok in checks.items() if not ok]
    if wrong:
        raise QuotingEnclaveRefused(
            f"the quote was signed by a quoting enclave whose {', '.join(wrong)} differ from "
            f"the {identity.get('id', 'QE')} identity: not a genuine quoting enclave"
        )
    for level in identity.get("tcbLevels", []):
        if report.isv_svn >= int(level["tcb"]["isvsvn"]):
            return level["tcbStatus"]
    return UNRECOGNIZED
