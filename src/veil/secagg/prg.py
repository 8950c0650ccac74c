"""Mask expansion: a 32-byte seed → a vector in Z_{2^b}, by the ChaCha20 stream cipher.

ChaCha20 (Bernstein 2008; RFC 8439) keyed with the seed and a fixed nonce, applied to zeros,
is a pseudo-random generator: without the seed its output is indistinguishable from uniform,
so ``x + PRG(seed) mod 2^b`` hides x (a one-time pad). Each seed is used for one mask only (seeds
are derived per round and per purpose), so the fixed nonce never repeats under one key.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from veil.errors import ConfigError

SEED_BYTES = 32
_NONCE = bytes(16)  # ChaCha20 in `cryptography`: 4-byte block counter + 12-byte nonce, all zero


def ring_dtype(bits: int) -> np.dtype:
    """The unsigned integer type that holds Z_{2^bits} (arithmetic wraps modulo its width)."""
    if not 1 <= bits <= 64:
        raise ConfigError(f"ring bits must be in [1, 64] (got {bits})")
    return np.dtype(np.uint32 if bits <= 32 else np.uint64)


def expand(seed: bytes, length: int, bits: int, out: np.ndarray | None = None) -> np.ndarray:
    """``length`` pseudo-random elements of Z_{2^bits}, uniformly distributed given a uniform seed.

    Elements are stored in `ring_dtype(bits)`; for bits below the dtype's width the high bits
    are cleared. Writes into ``out`` when given (no allocation).
    """
    if len(seed) != SEED_BYTES:
        raise ConfigError(f"a mask seed has {SEED_BYTES} bytes (got {len(seed)})")
    dtype = ring_dtype(bits)
    if out is None:
        out = np.empty(length, dtype)
    encryptor = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    encryptor.update_into(_zeros(out.nbytes), out.view(np.uint8))
    if bits < 8 * dtype.itemsize:
        out &= dtype.type((1 << bits) - 1)
    return out


_ZEROS = np.zeros(0, np.uint8)


def _zeros(nbytes: int) -> memoryview:
    """A read-only buffer of ``nbytes`` zeros (the plaintext the keystream is XORed with)."""
    global _ZEROS
    if _ZEROS.size < nbytes:
        _ZEROS = np.zeros(nbytes, np.uint8)
        _ZEROS.flags.writeable = False
    return memoryview(_ZEROS)[:nbytes]
