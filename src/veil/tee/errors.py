"""Why evidence or sealed state was refused: one error class per reason.

Every class is a `veil.errors.ProtocolError` (the protocol cannot continue with this peer), so a
client that refuses an aggregator stops before its update leaves; the message says what failed
and what to check.
"""

from __future__ import annotations

from veil.errors import ProtocolError


class AttestationError(ProtocolError):
    """Attestation evidence was refused (base class of every reason below)."""


class MalformedEvidence(AttestationError):
    """The quote or its envelope does not parse (wrong length, version, key or data type)."""


class QuoteSignatureInvalid(AttestationError):
    """A signature in the quote does not verify: the quote bytes were altered or forged."""


class UnknownCertificate(AttestationError):
    """The certificate chain does not lead to the configured root (or a link is not signed by
    the certificate above it)."""


class CertificateExpired(AttestationError):
    """A certificate of the chain is outside its validity period."""


class CertificateRevoked(AttestationError):
    """A certificate of the chain is on its issuer's revocation list."""


class CollateralInvalid(AttestationError):
    """TCB info or quoting-enclave identity is unsigned, altered, or for another platform."""


class CollateralExpired(AttestationError):
    """TCB info or quoting-enclave identity is past its ``nextUpdate``: fetch fresh collateral."""


class QuotingEnclaveRefused(AttestationError):
    """The quoting enclave that signed the quote is not the one the identity collateral names."""


class TcbStatusRefused(AttestationError):
    """The platform's (or quoting enclave's) TCB status is not one the policy accepts."""


class DebugEnclaveRefused(AttestationError):
    """The enclave runs in debug mode (its memory is readable by the host)."""


class MeasurementNotAllowed(AttestationError):
    """The enclave's measurement is not on the allowlist: it is not the published code."""


class KeyBindingMismatch(AttestationError):
    """The quote does not bind the public key the client is about to send its update to."""


class ReplayedEvidence(AttestationError):
    """The evidence answers another nonce (or round counter) than this connection's: a replay."""


class NonceReuse(AttestationError):
    """A nonce was used twice, or was never issued by this verifier."""


class RollbackDetected(AttestationError):
    """The aggregator's round counter went backwards: its sealed state was rolled back."""


class SealedStateRefused(AttestationError):
    """Sealed state does not open: altered, or sealed by another enclave (measurement)."""
