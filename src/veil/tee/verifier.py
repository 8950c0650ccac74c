"""Quote verification (Intel DCAP, ECDSA P-256) and the policy a client applies to the result.

Authenticity first, then policy, each refusal its own error (`veil.tee.errors`):

1. the PCK chain in the quote leads to the configured root, unexpired, unrevoked;
2. the PCK key signed the QE report, whose report data is SHA-256(attestation key ‖ auth
   data) — so the attestation key belongs to a quoting enclave on that platform;
3. the attestation key signed header ‖ body — so no byte of the body was changed;
4. the collateral (TCB info, QE identity) is signed by a chain to the same root and fresh; the
   quoting enclave is the genuine one; the platform's and the QE's TCB statuses are accepted;
5. policy: production mode (no debug enclave) unless allowed, and the measurement (MRENCLAVE,
   or MRTD for TDX) is on the allowlist.

Threat model: the verifier trusts only the root certificate and its own clock. Whoever holds
the root's (Intel's) keys can forge any quote; see docs/tee.md.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509

from veil.errors import ConfigError
from veil.tee import ecdsa
from veil.tee.certificates import load_chain, load_crl, verify_chain
from veil.tee.collateral import (
    TCB_STATUSES,
    Collateral,
    open_document,
    quoting_enclave_status,
    tcb_status,
)
from veil.tee.errors import (
    CollateralInvalid,
    DebugEnclaveRefused,
    MeasurementNotAllowed,
    QuoteSignatureInvalid,
    TcbStatusRefused,
)
from veil.tee.quote import Quote, parse_quote
from veil.tee.sgx_extensions import read_pck_platform

MEASUREMENT_BYTES = (32, 48)  # MRENCLAVE (SGX), MRTD (TDX)


@dataclass(frozen=True)
class AttestationPolicy:
    """What a client accepts. ``hardware`` is False for the simulated platform: then every
    description of the result says that no hardware protection is in place."""

    root: x509.Certificate
    measurements: frozenset[bytes]
    accepted_tcb_statuses: frozenset[str] = frozenset({"UpToDate"})
    allow_debug: bool = False
    hardware: bool = True

    def __post_init__(self):
        if not self.measurements:
            raise ConfigError("the attestation allowlist is empty: no aggregator could pass")
        bad = [m.hex() for m in self.measurements if len(m) not in MEASUREMENT_BYTES]
        if bad:
            raise ConfigError(
                f"measurements must be 32 bytes (MRENCLAVE) or 48 bytes (MRTD) (got {bad})"
            )
        unknown = sorted(set(self.accepted_tcb_statuses) - set(TCB_STATUSES))
        if unknown:
            raise ConfigError(
                f"unknown TCB status {unknown}; choose among {', '.join(TCB_STATUSES)}"
            )


@dataclass(frozen=True)
class AttestedQuote:
    """A quote that passed verification, with what the policy decided on."""

    quote: Quote
    measurement: bytes
    tcb_status: str
    qe_tcb_status: str

    @property
    def report_data(self) -> bytes:
        return self.quote.body.report_data


def _authentic(quote: Quote, root, now, crls) -> x509.Certificate:
    """Steps 1–3; returns the PCK certificate."""
    s = quote.signature
    pck = verify_chain(load_chain(s.pck_chain), root, now, crls)
    if not ecdsa.verifies(pck.public_key(), s.qe_report_signature, s.qe_report_bytes):
        raise QuoteSignatureInvalid(
            "the QE report is not signed by the platform's PCK key: the quote was altered"
        )
    binding = hashlib.sha256(s.attestation_key + s.qe_auth_data).digest()
    if s.qe_report.report_data != binding + bytes(32):
        raise QuoteSignatureInvalid(
            "the QE report does not certify this attestation key: the quote was altered"
        )
    try:
        key = ecdsa.public_key_from_raw(s.attestation_key)
    except ValueError:
        raise QuoteSignatureInvalid("the attestation key is not a P-256 point") from None
    if not ecdsa.verifies(key, s.signature, quote.signed_bytes):
        raise QuoteSignatureInvalid(
            "the quote signature does not verify over its header and body: the quote bytes "
            "were altered"
        )
    return pck


def _check_status(status: str, whose: str, policy: AttestationPolicy) -> None:
    if status not in policy.accepted_tcb_statuses:
        raise TcbStatusRefused(
            f"{whose} TCB status is {status}, not one of {sorted(policy.accepted_tcb_statuses)}: "
            "update the platform (microcode, BIOS, quoting enclave) or accept the status in "
            "aggregation.tee.accepted_tcb_statuses"
        )


def verify_quote(
    data: bytes,
    collateral: Collateral,
    policy: AttestationPolicy,
    now: datetime.datetime | None = None,
) -> AttestedQuote:
    """Verify an SGX v3 / TDX v4 quote against ``policy`` at time ``now`` (default: now)."""
    now = now or datetime.datetime.now(datetime.UTC)
    quote = parse_quote(data)
    crls = [load_crl(c) for c in collateral.crls]
    pck = _authentic(quote, policy.root, now, crls)
    tcb_info = open_document(collateral.tcb_info, "tcbInfo", collateral, policy.root, now)
    identity = open_document(
        collateral.qe_identity, "enclaveIdentity", collateral, policy.root, now
    )
    try:
        qe_status = quoting_enclave_status(identity, quote.signature.qe_report)
        status = tcb_status(tcb_info, read_pck_platform(pck), quote)
    except (KeyError, TypeError, ValueError) as error:
        raise CollateralInvalid(f"the collateral lacks an expected field ({error})") from None
    _check_status(qe_status, "the quoting enclave's", policy)
    _check_status(status, "the platform's", policy)
    if quote.body.debug and not policy.allow_debug:
        raise DebugEnclaveRefused(
            "the aggregator runs in a DEBUG enclave, whose memory the host can read: refused in "
            "production mode (rebuild without --debug, or set aggregation.tee.allow_debug for "
            "development only)"
        )
    measurement = quote.body.measurement
    if measurement not in policy.measurements:
        raise MeasurementNotAllowed(
            f"measurement {measurement.hex()} is not on the allowlist "
            f"({', '.join(sorted(m.hex()[:16] + '…' for m in policy.measurements))}): the "
            "aggregator does not run the published code"
        )
    return AttestedQuote(quote, measurement, status, qe_status)
