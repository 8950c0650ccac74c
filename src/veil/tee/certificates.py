"""X.509 chains of attestation: the PCK chain in a quote and the chain that signs collateral.

Intel's chains are short and fixed (Intel SGX PCK Certificate and CRL Profile): PCK leaf ←
PCK Platform (or Processor) CA ← Intel SGX Root CA, and TCB Signing ← Root CA. A chain is
accepted only if every link is signed by the certificate above it, every issuer is a CA,
every certificate is valid at the time of verification, none is on a revocation list given
with the collateral, and it ends at the *configured* root (Intel's in production, the
simulated platform's in development). Signatures are checked by ``cryptography``.
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from veil.errors import ConfigError
from veil.tee.errors import (
    CertificateExpired,
    CertificateRevoked,
    MalformedEvidence,
    UnknownCertificate,
)


def load_chain(pem: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM chain, leaf first (a NUL terminator is ignored)."""
    try:
        chain = x509.load_pem_x509_certificates(pem.rstrip(b"\x00"))
    except ValueError:
        raise MalformedEvidence("the certificate chain is not a valid PEM chain") from None
    return chain


def load_root(path: str | Path) -> x509.Certificate:
    """The trusted root certificate in the PEM file ``path``."""
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except OSError as error:
        raise ConfigError(
            f"attestation root certificate {path}: {error.strerror or error}; for Intel SGX, "
            "download Intel_SGX_Provisioning_Certification_RootCA.pem from "
            "https://certificates.trustedservices.intel.com/"
        ) from None
    except ValueError:
        raise ConfigError(f"attestation root certificate {path} is not a PEM certificate") from None


def describe(certificate: x509.Certificate) -> str:
    """The certificate's subject, for messages."""
    return certificate.subject.rfc4514_string() or "(no subject)"


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A revocation list in PEM or DER."""
    try:
        if data.lstrip().startswith(b"-----"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise MalformedEvidence("a revocation list in the collateral does not parse") from None


def _check_validity(certificate: x509.Certificate, now: datetime.datetime) -> None:
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if not start <= now <= end:
        state = "expired" if now > end else "not yet valid"
        raise CertificateExpired(
            f"certificate {describe(certificate)} is {state} (valid {start:%Y-%m-%d} to "
            f"{end:%Y-%m-%d}, checked at {now:%Y-%m-%d %H:%M} UTC): the platform needs a "
            "current certificate"
        )


def _check_issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> None:
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise UnknownCertificate(f"{describe(issuer)} is not a certificate authority")
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise UnknownCertificate(
            f"certificate {describe(certificate)} is not signed by {describe(issuer)}"
        ) from None


def _check_revocation(
    chain: Sequence[x509.Certificate], crls: Sequence[x509.CertificateRevocationList]
) -> None:
    for crl in crls:
        issuer = next((c for c in chain if c.subject == crl.issuer), None)
        if issuer is None:
            continue  # a list for another part of the hierarchy
        if not crl.is_signature_valid(issuer.public_key()):
            raise UnknownCertificate(
                f"the revocation list of {describe(issuer)} is not signed by it"
            )
        for certificate in chain:
            if certificate.issuer != crl.issuer:
                continue
            if crl.get_revoked_certificate_by_serial_number(certificate.serial_number):
                raise CertificateRevoked(
                    f"certificate {describe(certificate)} (serial {certificate.serial_number:x}) "
                    f"is revoked by {describe(issuer)}"
                )


def verify_chain(
    chain: Sequence[x509.Certificate],
    root: x509.Certificate,
    now: datetime.datetime,
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> x509.Certificate:
    """Check ``chain`` (leaf first) up to ``root`` at time ``now``; return the leaf.

    The chain may end with the root itself or with a certificate the root issued.
    """
    if not chain:
        raise MalformedEvidence("the certificate chain is empty")
    chain = list(chain)
    if chain[-1] != root:
        if chain[-1].issuer != root.subject or chain[-1].subject == chain[-1].issuer:
            raise UnknownCertificate(
                f"the chain ends at {describe(chain[-1])}, not at the configured root "
                f"{describe(root)}: evidence from another platform vendor or a test platform"
            )
        chain.append(root)
    for certificate in chain:
        _check_validity(certificate, now)
    for certificate, issuer in itertools.pairwise(chain):
        _check_issued_by(certificate, issuer)
    _check_revocation(chain, crls)
    return chain[0]
