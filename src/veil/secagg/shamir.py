"""Shamir's t-out-of-n secret sharing over the prime field GF(p), p = 2^256 + 297.

Shamir 1979 ("How to Share a Secret"): the secret s is the constant term of a random polynomial
f of degree t − 1 over GF(p); holder x receives (x, f(x)). Any t shares give s by Lagrange
interpolation at 0; any t − 1 shares are uniformly distributed and reveal nothing about s.

Secrets are byte strings of at most 32 bytes (seeds and private keys), read as integers
< 2^256 < p. Coefficients come from ``secrets`` (the OS's cryptographic source).
Threat model: information-theoretic secrecy against t − 1 colluding holders; no integrity —
a wrong share gives a wrong secret, so callers authenticate shares (SecAgg+ encrypts them
with AES-GCM).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import NamedTuple

from veil.errors import ConfigError, ProtocolError

PRIME = 2**256 + 297  # the smallest prime above 2^256
SECRET_BYTES = 32
SHARE_BYTES = 33  # a field element, big-endian


class Share(NamedTuple):
    """Holder ``x`` (1 ≤ x < p) and the polynomial's value there."""

    x: int
    y: int

    def to_bytes(self) -> bytes:
        return self.y.to_bytes(SHARE_BYTES, "big")


def split(secret: bytes, threshold: int, holders: Sequence[int]) -> list[Share]:
    """Shares of ``secret`` for ``holders`` (distinct positive integers); any ``threshold``
    of them recover it, fewer reveal nothing."""
    if len(secret) > SECRET_BYTES:
        raise ConfigError(f"a Shamir secret has at most {SECRET_BYTES} bytes (got {len(secret)})")
    if not 1 <= threshold <= len(holders):
        raise ConfigError(
            f"threshold must be in [1, number of holders = {len(holders)}] (got {threshold})"
        )
    if len(set(holders)) != len(holders) or any(not 0 < x < PRIME for x in holders):
        raise ConfigError("Shamir holders must be distinct integers in [1, p)")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return [Share(x, _evaluate(coefficients, x)) for x in holders]


def combine(shares: Sequence[Share], threshold: int) -> bytes:
    """The secret from ``threshold`` or more shares (the first ``threshold`` are used)."""
    if len(shares) < threshold:
        raise ProtocolError(f"{len(shares)} shares cannot recover a {threshold}-of-n secret")
    used = shares[:threshold]
    xs = [s.x for s in used]
    if len(set(xs)) != len(xs):
        raise ProtocolError("two shares come from the same holder")
    secret = 0
    for i, (xi, yi) in enumerate(used):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                numerator = numerator * xj % PRIME
                denominator = denominator * (xj - xi) % PRIME
        secret = (secret + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise ProtocolError("the shares are inconsistent (the recovered value is not a secret)")
    return secret.to_bytes(SECRET_BYTES, "big")


def share_from_bytes(x: int, data: bytes) -> Share:
    """Parse a share received as ``SHARE_BYTES`` big-endian bytes."""
    if len(data) != SHARE_BYTES:
        raise ProtocolError(f"a share has {SHARE_BYTES} bytes (got {len(data)})")
    y = int.from_bytes(data, "big")
    if y >= PRIME:
        raise ProtocolError("a share is not a field element")
    return Share(x, y)


def _evaluate(coefficients: list[int], x: int) -> int:
    value = 0
    for c in reversed(coefficients):  # Horner
        value = (value * x + c) % PRIME
    return value
