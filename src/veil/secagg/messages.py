"""The messages of one SecAgg+ round: plain, frozen data classes, ready for a network transport.

Client → server messages carry the sender's Ed25519 signature over `signed_bytes` (every field
but the signature, with the stage name), so a message cannot be forged, moved to another round
or stage, or attributed to another client. `encode` is the canonical, length-prefixed byte
form used for signing and for counting bytes on the wire.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

STAGES = ("advertise keys", "share keys", "masked input", "unmasking")


@dataclass(frozen=True)
class RoundSetup:
    """Server → clients: the round's public parameters."""

    round_id: bytes
    clients: tuple[int, ...]
    neighbours: int
    threshold: int
    min_survivors: int
    bits: int
    length: int
    hybrid: bool
    graph_seed: int


@dataclass(frozen=True)
class KeyAdvertisement:
    """Stage 0, client → server: the round's public keys."""

    round_id: bytes
    sender: int
    cipher_public: bytes
    mask_public: bytes
    kem_public: bytes  # empty unless hybrid
    signature: bytes = b""
    stage = "advertise keys"


@dataclass(frozen=True)
class NeighbourKeys:
    """Server → client: the signed advertisements of its neighbours who advertised."""

    round_id: bytes
    advertisements: tuple[KeyAdvertisement, ...]


@dataclass(frozen=True)
class Envelope:
    """Shares from ``sender`` for ``recipient``, sealed with AES-GCM; with the hybrid option,
    also the ML-KEM ciphertext that gives ``recipient`` the key's post-quantum half."""

    sender: int
    recipient: int
    kem_ciphertext: bytes
    sealed: bytes


@dataclass(frozen=True)
class EncryptedShares:
    """Stage 1, client → server: one envelope per neighbour; with the hybrid option also the
    sender's *recovery blob* (its ML-KEM key and the ML-KEM secrets it encapsulated, sealed
    under a key it Shamir-shares), which the server keeps in case the sender drops."""

    round_id: bytes
    sender: int
    envelopes: tuple[Envelope, ...]
    recovery: bytes = b""
    signature: bytes = b""
    stage = "share keys"


@dataclass(frozen=True)
class ForwardedShares:
    """Server → client: the envelopes addressed to it by neighbours who shared."""

    round_id: bytes
    envelopes: tuple[Envelope, ...]


@dataclass(frozen=True)
class MaskedInput:
    """Stage 2, client → server: y = x + PRG(b) + Σ ±PRG(s_uv) in Z_{2^b}, and the peers whose
    pairwise masks it contains."""

    round_id: bytes
    sender: int
    masked_with: tuple[int, ...]
    vector: np.ndarray
    signature: bytes = b""
    stage = "masked input"


@dataclass(frozen=True)
class UnmaskRequest:
    """Server → clients: who is in the sum (``survivors``) and who dropped after sharing."""

    round_id: bytes
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass(frozen=True)
class UnmaskResponse:
    """Stage 3, client → server: shares of survivors' self-mask seeds and shares of dropped
    clients' mask keys (hybrid: followed by the share of their recovery-blob key)."""

    round_id: bytes
    sender: int
    self_mask_shares: tuple[tuple[int, bytes], ...]
    mask_key_shares: tuple[tuple[int, bytes], ...]
    signature: bytes = b""
    stage = "unmasking"


ClientMessage = KeyAdvertisement | EncryptedShares | MaskedInput | UnmaskResponse


def encode(value: Any, digest_arrays: bool = False) -> bytes:
    """Canonical bytes: type-tagged and length-prefixed, so distinct values never collide.
    With ``digest_arrays``, an array stands for its SHA-256 digest (what is signed)."""
    kind = type(value)
    if kind is bytes:
        return b"b" + _LENGTH.pack(len(value)) + value
    if kind is int:
        return b"i" + value.to_bytes(16, "big", signed=True)
    if kind is tuple or kind is list:
        items = b"".join([encode(v, digest_arrays) for v in value])
        return b"t" + _LENGTH.pack(len(value)) + items
    if kind is bool:
        return b"?" + bytes([value])
    if kind is str:
        data = value.encode()
        return b"s" + _LENGTH.pack(len(data)) + data
    if kind is np.ndarray:
        data = np.ascontiguousarray(value)
        header = encode(data.dtype.str) + encode(tuple(int(n) for n in data.shape))
        raw = memoryview(data).cast("B")
        return b"a" + header + (hashlib.sha256(raw).digest() if digest_arrays else raw.tobytes())
    if dataclasses.is_dataclass(value):
        names = _field_names(kind)
        fields = [encode(getattr(value, name), digest_arrays) for name in names]
        return b"d" + encode(kind.__name__) + b"".join(fields)
    raise TypeError(f"cannot encode {kind.__name__}")


_LENGTH = struct.Struct(">Q")


@functools.cache
def _field_names(kind: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(kind))


def signed_bytes(message: ClientMessage) -> bytes:
    """What the sender signs: the stage name and every field except the signature (vectors by
    their SHA-256 digest: hash-then-sign, so a 400 kB vector is hashed once, not copied)."""
    fields = [getattr(message, name) for name in _field_names(type(message)) if name != "signature"]
    return encode((message.stage, *fields), digest_arrays=True)


def wire_size(message: Any) -> int:
    """Bytes of the message in canonical form (what a transport would send)."""
    if isinstance(message, MaskedInput):  # avoid copying the vector just to count it
        head = dataclasses.replace(message, vector=np.empty(0, message.vector.dtype))
        return len(encode(head)) + message.vector.nbytes
    return len(encode(message))
