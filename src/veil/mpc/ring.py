"""The ring Z_{2^64}, fixed-point encoding into it, and a cryptographic generator of ring elements.

Secret shares are numpy ``uint64`` arrays: numpy's unsigned arithmetic wraps around modulo 2^64,
so ``+``, ``-``, ``*`` and ``@`` on them *are* the ring operations, with no reduction step.

Fixed point (SecureML, Mohassel & Zhang 2017, §4.1): a real ``v`` is the ring element
``round(v · 2^f) mod 2^64`` for ``f`` fractional bits, read back through the two's-complement
signed value: ``decode(x) = int64(x) / 2^f``. A product of two encodings carries ``2f`` fractional
bits, so it is truncated (`veil.mpc.truncation`) by ``f`` bits to stay at ``f``.

Randomness for shares and masks comes from `RingGenerator`: AES-128 in counter mode (from
``cryptography``) keyed from ``os.urandom``, or from a key two parties agreed on (pseudo-random
secret sharing in `veil.mpc.replicated`). Never numpy's generators: they are not cryptographic.
"""

from __future__ import annotations

import secrets

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from veil.errors import ConfigError

__all__ = [
    "MAX_FRACTIONAL_BITS",
    "RING_BITS",
    "RingGenerator",
    "decode",
    "encode",
    "to_signed",
]

RING_BITS = 64
MAX_FRACTIONAL_BITS = 30
_SAFE_MAGNITUDE = 2.0**62  # encodings beyond this would wrap into the other sign


def encode(values: np.ndarray | float, frac_bits: int) -> np.ndarray:
    """``round(v · 2^f) mod 2^64`` as ``uint64``; refuses values whose encoding would wrap."""
    if not 0 <= frac_bits <= MAX_FRACTIONAL_BITS:
        raise ConfigError(
            f"fractional bits must be in 0..{MAX_FRACTIONAL_BITS} (got {frac_bits}): more leave "
            "too little room in the 64-bit ring for products"
        )
    scaled = np.rint(np.asarray(values, dtype=np.float64) * 2.0**frac_bits)
    if not np.all(np.abs(scaled) < _SAFE_MAGNITUDE):  # also catches nan and inf
        raise ConfigError(
            f"cannot encode values beyond ±2^{62 - frac_bits} (or non-finite ones) with "
            f"{frac_bits} fractional bits: scale the data or lower the fractional bits"
        )
    return scaled.astype(np.int64).view(np.uint64)


def decode(ring: np.ndarray, frac_bits: int) -> np.ndarray:
    """The real numbers that fixed-point ring elements stand for (``float64``)."""
    return to_signed(ring).astype(np.float64) / 2.0**frac_bits


def to_signed(ring: np.ndarray) -> np.ndarray:
    """Two's-complement view of ring elements as ``int64`` (no copy)."""
    return np.asarray(ring, dtype=np.uint64).view(np.int64)


class RingGenerator:
    """Uniform ring elements from AES-128-CTR: a cryptographic pseudo-random generator.

    ``RingGenerator()`` draws its key from the operating system (``secrets``);
    ``RingGenerator(key)`` with a 16-byte key two parties share gives both the same stream, as
    long as both draw the same shapes in the same order.
    """

    def __init__(self, key: bytes | None = None, stream: int = 0) -> None:
        key = secrets.token_bytes(16) if key is None else key
        if len(key) != 16:
            raise ConfigError(f"a RingGenerator key is 16 bytes (got {len(key)})")
        nonce = stream.to_bytes(8, "big") + bytes(8)
        self._keystream = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()

    def bytes(self, count: int) -> bytes:
        """The next ``count`` bytes of the key stream."""
        return self._keystream.update(bytes(count))

    def ring(self, shape: int | tuple[int, ...]) -> np.ndarray:
        """Uniform ``uint64`` elements of Z_{2^64} of the given shape."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        count = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(self.bytes(8 * count), dtype=np.uint64).reshape(shape).copy()

    def below(self, bound: int, count: int) -> list[int]:
        """``count`` integers uniform in ``[0, bound)`` (for masks wider than 64 bits)."""
        width = (bound.bit_length() + 64 + 7) // 8  # 64 extra bits: bias below 2^-64
        data = self.bytes(width * count)
        return [
            int.from_bytes(data[i * width : (i + 1) * width], "little") % bound
            for i in range(count)
        ]
