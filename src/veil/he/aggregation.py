"""Encrypted aggregation: clients encrypt, the aggregator adds ciphertexts, a key holder decrypts
only the final sum.

    key holder ─ public key ─► clients ─ EncryptedUpdate ─► aggregator ─ EncryptedSum ─► key holder

Roles and threat model (FATE's arbiter design): the key holder generates the key pair and
publishes the public part; it is not the aggregator. The aggregator sees only ciphertexts. The
key holder decrypts only sums of at least ``min_clients`` updates and never sees an individual
ciphertext — assuming aggregator and key holder do not collude (if they do, every update is
exposed). The claim sentence says so. Integer schemes (BFV, Paillier) pack quantized values
(`veil.he.packing`); the aggregator refuses to add more updates than the packing headroom
allows, so lanes cannot overflow.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from veil.errors import ConfigError, ProtocolError
from veil.he.packing import (
    PackingLayout,
    choose_layout,
    dequantize,
    pack,
    pack_big,
    quantize,
    unpack,
    unpack_big,
)


@dataclass(frozen=True)
class EncryptedUpdate:
    """Client → aggregator: one client's ciphertexts under key ``key_id``; ``digest`` is
    SHA-256 over the rest, so a corrupted message is refused."""

    sender: int
    key_id: bytes
    length: int
    chunks: tuple[bytes, ...]
    digest: bytes


@dataclass(frozen=True)
class EncryptedSum:
    """Aggregator → key holder: the sum of ``count`` clients' ciphertexts."""

    key_id: bytes
    length: int
    count: int
    chunks: tuple[bytes, ...]


def _digest(sender: int, key: bytes, length: int, chunks: tuple[bytes, ...]) -> bytes:
    h = hashlib.sha256(sender.to_bytes(8, "big") + key + length.to_bytes(8, "big"))
    for chunk in chunks:
        h.update(len(chunk).to_bytes(8, "big") + chunk)
    return h.digest()


def layout_for(
    scheme: Any, max_clients: int, clip: float, value_bits: int, noise_room: float = 0.0
) -> PackingLayout | None:
    """The packing of an integer scheme (None for CKKS, which encrypts floats); ``noise_room``
    as in `choose_layout`."""
    if scheme.name == "ckks":
        return None
    if max_clients > scheme.max_summands:
        raise ConfigError(
            f"{scheme.name} decrypts sums of at most {scheme.max_summands} ciphertexts exactly "
            f"(noise budget); got {max_clients} clients"
        )
    return choose_layout(scheme.slot_bits, max_clients, clip, value_bits, noise_room)


def encrypt_update(
    scheme: Any,
    sender: int,
    x: np.ndarray,
    layout: PackingLayout | None,
    rng: np.random.Generator,
    noise: np.ndarray | None = None,
) -> EncryptedUpdate:
    """Client side: quantize and pack (integer schemes) or chunk (CKKS), then encrypt under the
    public key. ``noise`` (int64, integer schemes) is added to the quantized lanes."""
    x = np.asarray(x, np.float64).reshape(-1)
    if layout is None:
        rows = np.zeros((-(-x.size // scheme.slots) or 1, scheme.slots))
        rows.reshape(-1)[: x.size] = x
        chunks = scheme.encrypt(rows)
    else:
        lanes = quantize(x, layout, rng)
        if noise is not None:
            lanes = lanes + noise
            if lanes.min() < 0 or lanes.max() > 2 * layout.offset:
                raise ProtocolError(f"client {sender}: noise left the packing range (refusing)")
        packed = (
            pack_big(lanes, layout)
            if scheme.name == "paillier"
            else pack(lanes, layout, scheme.slots)
        )
        chunks = scheme.encrypt(packed)
    chunks = tuple(chunks)
    return EncryptedUpdate(
        sender, scheme.key, x.size, chunks, _digest(sender, scheme.key, x.size, chunks)
    )


def aggregate(
    scheme: Any, updates: list[EncryptedUpdate], layout: PackingLayout | None
) -> EncryptedSum:
    """Aggregator side: check each update and add the ciphertexts (no key needed)."""
    if not updates:
        raise ProtocolError("no encrypted updates to aggregate")
    limit = layout.max_clients if layout is not None else scheme.max_summands
    if len(updates) > limit:
        raise ProtocolError(f"{len(updates)} updates exceed the packing headroom of {limit}")
    senders = [u.sender for u in updates]
    if len(set(senders)) != len(senders):
        raise ProtocolError("two updates from the same client (replayed)")
    first = updates[0]
    for u in updates:
        where = f"client {u.sender}"
        if u.key_id != scheme.key:
            raise ProtocolError(f"{where}: ciphertext made under another key or context")
        if u.length != first.length or len(u.chunks) != len(first.chunks):
            raise ProtocolError(f"{where}: update of the wrong size")
        if u.digest != _digest(u.sender, u.key_id, u.length, u.chunks):
            raise ProtocolError(f"{where}: corrupted or tampered update")
    total = list(first.chunks)
    for u in updates[1:]:
        total = scheme.add(total, list(u.chunks), f"client {u.sender}")
    return EncryptedSum(scheme.key, first.length, len(updates), tuple(total))


def decrypt_sum(
    scheme: Any, encrypted: EncryptedSum, layout: PackingLayout | None, min_clients: int
) -> np.ndarray:
    """Key holder side: the float sum, only for sums of ≥ ``min_clients`` updates."""
    if encrypted.key_id != scheme.key:
        raise ProtocolError("the sum was made under another key")
    if encrypted.count < min_clients:
        raise ProtocolError(
            f"refusing to decrypt a sum of {encrypted.count} updates (< min_clients = "
            f"{min_clients}): it could be one client's update"
        )
    plain = scheme.decrypt(list(encrypted.chunks))
    if layout is None:
        return np.asarray(plain, np.float64).reshape(-1)[: encrypted.length]
    if scheme.name == "paillier":
        lanes = unpack_big(plain, layout, encrypted.length)
    else:
        lanes = unpack(plain, layout, encrypted.length)
    return dequantize(lanes, layout, encrypted.count)
