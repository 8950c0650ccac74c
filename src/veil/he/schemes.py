"""The three additively homomorphic back ends of encrypted aggregation, one interface.

- ``bfv``: TenSEAL BFV, N = 4096, Q = 54-bit ciphertext prime (+ 54-bit special prime),
  plaintext modulus t = the largest batching prime below 2^41; 4096 slots of 40 usable bits,
  each packing several quantized values (`veil.he.packing`). log2 Q = 108 ≤ 109: 128-bit secure.
  The noise budget was measured to decrypt sums of 128 ciphertexts exactly; that is the cap.
- ``ckks``: TenSEAL CKKS, N = 8192, primes [60, 40, 40, 60], scale 2^40 (TenSEAL's usual
  default), 4096 floats per ciphertext, approximate.
- ``paillier``: Paillier (`phe`, gmpy2), 3072-bit modulus (128-bit security): each plaintext
  packs ⌊3070 / lane_bits⌋ quantized values.

A scheme is created by the key holder (`generate`), which keeps the secret part; `public()` is
what clients and the aggregator receive. Encrypting and adding need only the public part.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

import gmpy2
import numpy as np
import tenseal as ts
from phe import paillier

from veil.errors import ConfigError, ProtocolError
from veil.he.context import (
    bfv_context,
    ckks_context,
    key_id,
    load_public_context,
    load_vector,
    public_bytes,
)

BFV_N, BFV_PRIMES, BFV_PLAIN_BITS, BFV_MAX_SUMMANDS = 4096, [54, 54], 41, 128
CKKS_SLOTS = 4096
SCHEMES = ("bfv", "ckks", "paillier")


def batching_prime(bits: int, poly_modulus_degree: int) -> int:
    """The largest prime t < 2^bits with t ≡ 1 (mod 2N), as BFV batching needs."""
    step = 2 * poly_modulus_degree
    t = (2**bits - 1) // step * step + 1
    while not gmpy2.is_prime(t):
        t -= step
    return t


@dataclass
class TensealScheme:
    """BFV or CKKS through TenSEAL; ``context`` holds the secret key only at the key holder."""

    name: str
    context: ts.Context
    published: bytes = b""
    key: bytes = field(default=b"", init=False)

    def __post_init__(self) -> None:
        self.published = self.published or public_bytes(self.context)
        self.key = key_id(self.published)

    @property
    def slot_bits(self) -> int:
        return BFV_PLAIN_BITS - 1 if self.name == "bfv" else 0

    @property
    def slots(self) -> int:
        return BFV_N if self.name == "bfv" else CKKS_SLOTS

    @property
    def max_summands(self) -> int:
        return BFV_MAX_SUMMANDS if self.name == "bfv" else 1 << 20

    def public(self) -> TensealScheme:
        return TensealScheme(self.name, load_public_context(self.published), self.published)

    def encrypt(self, rows: np.ndarray) -> list[bytes]:
        """One ciphertext per row: int64 slot values (bfv) or floats (ckks)."""
        make = ts.bfv_vector if self.name == "bfv" else ts.ckks_vector
        return [make(self.context, row.tolist()).serialize() for row in rows]

    def add(self, a: list[bytes], b: list[bytes], sender: str) -> list[bytes]:
        return [
            (self._load(x, sender) + self._load(y, sender)).serialize()
            for x, y in zip(a, b, strict=True)
        ]

    def decrypt(self, chunks: list[bytes]) -> np.ndarray:
        if not self.context.has_secret_key():
            raise ProtocolError("only the key holder can decrypt")
        values = [self._load(c, "aggregate").decrypt() for c in chunks]
        if self.name == "bfv":  # SEAL decrypts to centred residues; lanes need [0, t)
            return np.array(values, np.int64) % bfv_plain_modulus()
        return np.array(values, np.float64)

    def _load(self, data: bytes, sender: str):
        return load_vector(self.context, data, self.name, sender)


@functools.cache
def bfv_plain_modulus() -> int:
    return batching_prime(BFV_PLAIN_BITS, BFV_N)


@dataclass
class PaillierScheme:
    """Paillier over Z_{n²}: ciphertexts multiply to add plaintexts; ``private`` only at the key
    holder. Ciphertexts travel as fixed-width big-endian integers."""

    public_key: paillier.PaillierPublicKey
    private_key: paillier.PaillierPrivateKey | None = None
    name: str = "paillier"

    @property
    def key(self) -> bytes:
        return hashlib.sha256(self.public_key.n.to_bytes(self._width // 2, "big")).digest()

    @property
    def _width(self) -> int:
        return (self.public_key.nsquare.bit_length() + 7) // 8

    @property
    def slot_bits(self) -> int:
        return self.public_key.n.bit_length() - 2

    slots = 1
    max_summands = 1 << 20

    def public(self) -> PaillierScheme:
        return PaillierScheme(self.public_key)

    def encrypt(self, plaintexts: list[int]) -> list[bytes]:
        return [self.public_key.raw_encrypt(p).to_bytes(self._width, "big") for p in plaintexts]

    def add(self, a: list[bytes], b: list[bytes], sender: str) -> list[bytes]:
        n2 = self.public_key.nsquare
        return [
            (int(gmpy2.mpz(self._load(x, sender)) * self._load(y, sender) % n2)).to_bytes(
                self._width, "big"
            )
            for x, y in zip(a, b, strict=True)
        ]

    def decrypt(self, chunks: list[bytes]) -> list[int]:
        if self.private_key is None:
            raise ProtocolError("only the key holder can decrypt")
        return [self.private_key.raw_decrypt(self._load(c, "aggregate")) for c in chunks]

    def _load(self, data: bytes, sender: str) -> int:
        value = int.from_bytes(data, "big")
        if len(data) != self._width or not 0 < value < self.public_key.nsquare:
            raise ProtocolError(f"{sender}: malformed Paillier ciphertext")
        return value


def generate(scheme: str, paillier_bits: int = 3072) -> Any:
    """A fresh key pair for ``scheme`` (the key holder's side). Paillier needs a 3072-bit
    modulus for 128-bit security (NIST SP 800-57: 2048 bits give 112)."""
    if scheme == "bfv":
        return TensealScheme("bfv", bfv_context(BFV_N, bfv_plain_modulus(), BFV_PRIMES))
    if scheme == "ckks":
        return TensealScheme("ckks", ckks_context())
    if scheme == "paillier":
        if paillier_bits < 3072:
            raise ConfigError(
                f"a {paillier_bits}-bit Paillier modulus is below 128-bit security "
                "(NIST SP 800-57 needs 3072 bits)"
            )
        public, private = paillier.generate_paillier_keypair(n_length=paillier_bits)
        return PaillierScheme(public, private)
    raise ConfigError(f"scheme must be one of {SCHEMES} (got {scheme!r})")
