"""Dealer-free Beaver triples for two parties, from Paillier encryption (`phe`).

Each party i draws its own shares Aᵢ, Bᵢ. Then

    C = (A₀ + A₁)(B₀ + B₁) = A₀B₀ + A₁B₁ + A₀B₁ + A₁B₀,

and the two cross terms are computed with additively homomorphic encryption (the
Gilboa-style product of SecureML §4.2, "LHE-based generation"): party j sends Enc_j(B_j)
under its own key; party i computes Enc_j(Aᵢ·B_j + R) homomorphically (plaintext times
ciphertext), re-randomises it, sends it back and keeps −R; party j decrypts and reduces
mod 2^64. R is uniform and 40 bits wider than any product sum, so the decrypted value hides
Aᵢ statistically. Each party ends with shares of all four terms. Semi-honest, no third party.

Cost per triple, for each party: one encryption per element of B, one ciphertext-power per
multiply-add of the product, one re-randomisation and one decryption per element of C
(`PaillierTripleCost`). Both directions run in the same rounds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from phe import EncryptedNumber, paillier

from veil.errors import ConfigError, ProtocolError
from veil.mpc.beaver import PrecomputedTriples, TriplePlan, product, result_shape
from veil.mpc.party import Party
from veil.mpc.ring import RING_BITS, RingGenerator

__all__ = ["PaillierTripleCost", "generate_paillier_triples"]

STATISTICAL_BITS = 40
MIN_KEY_BITS = 1024  # below 3072 bits is for tests only (the run config asks for >= 3072)


@dataclass(frozen=True)
class PaillierTripleCost:
    """What one party spent making triples: time, wire bytes and Paillier operations."""

    seconds: float
    bytes_sent: int
    triples: int
    encryptions: int
    decryptions: int
    key_bits: int


def _to_array(numbers: list[int], width: int) -> np.ndarray:
    data = b"".join(n.to_bytes(width, "big") for n in numbers)
    return np.frombuffer(data, np.uint8).reshape(len(numbers), width)


def _to_ints(array: np.ndarray) -> list[int]:
    return [int.from_bytes(row.tobytes(), "big") for row in array]


def generate_paillier_triples(
    party: Party, plan: TriplePlan, key_bits: int = 3072
) -> tuple[PrecomputedTriples, PaillierTripleCost]:
    """Both parties call this with the same ``plan``; each gets its shares of the triples."""
    if party.num_parties != 2:
        raise ConfigError(f"Paillier triples are for 2 parties (got {party.num_parties})")
    if key_bits < MIN_KEY_BITS:
        raise ConfigError(f"key_bits must be >= {MIN_KEY_BITS} (got {key_bits})")
    started, peer = time.perf_counter(), 1 - party.index
    before = party.total().bytes_sent
    with party.operation("paillier_triples"):
        public, private = paillier.generate_paillier_keypair(n_length=key_bits)
        width = (key_bits + 7) // 8
        theirs = party.exchange(
            {peer: _to_array([public.n], width)}, {peer: ((1, width), np.uint8)}
        )[peer]
        peer_key = paillier.PaillierPublicKey(_to_ints(theirs)[0])
        if peer_key.n.bit_length() < MIN_KEY_BITS:
            raise ProtocolError(f"party {peer} sent a Paillier key below {MIN_KEY_BITS} bits")
        stock, counts = PrecomputedTriples(), {"encryptions": 0, "decryptions": 0, "triples": 0}
        generator = RingGenerator()
        for (kind, shape_a, shape_b), count in sorted(plan.items()):
            out_shape = result_shape(kind, shape_a, shape_b)
            a = generator.ring((count, *shape_a))
            b = generator.ring((count, *shape_b))
            cross = _cross_terms(party, peer, public, private, peer_key, kind, a, b, counts)
            c = np.stack([product(kind, a[k], b[k]) for k in range(count)]) + cross
            stock.stock[(kind, tuple(shape_a), tuple(shape_b))] = [
                (a[k], b[k], c[k].reshape(out_shape)) for k in range(count)
            ]
            counts["triples"] += count
    cost = PaillierTripleCost(
        seconds=time.perf_counter() - started,
        bytes_sent=party.total().bytes_sent - before,
        key_bits=key_bits,
        **counts,
    )
    return stock, cost


def _cross_terms(party, peer, public, private, peer_key, kind, a, b, counts) -> np.ndarray:
    """This party's share of A_mine·B_peer + A_peer·B_mine for every triple of one signature."""
    cipher_width = (2 * public.n.bit_length() + 7) // 8
    peer_width = (2 * peer_key.n.bit_length() + 7) // 8
    mine = [public.encrypt(int(v)) for v in b.ravel()]
    counts["encryptions"] += len(mine)
    received = party.exchange(
        {peer: _to_array([e.ciphertext(False) for e in mine], cipher_width)},
        {peer: ((b.size, peer_width), np.uint8)},
    )[peer]
    their_b = np.array(
        [EncryptedNumber(peer_key, c) for c in _to_ints(received)], dtype=object
    ).reshape(b.shape)
    inner = a.shape[-1] if kind == "matmul" else 1
    mask_bound = 2 ** (2 * RING_BITS + inner.bit_length() + STATISTICAL_BITS)
    products = [_encrypted_product(kind, a[k], their_b[k]) for k in range(len(a))]
    flat = [e for p in products for e in p.ravel()]
    masks = RingGenerator().below(mask_bound, len(flat))
    answers = [(e + r).ciphertext(True) for e, r in zip(flat, masks, strict=True)]
    counts["encryptions"] += len(answers)  # each re-randomisation is an r^n like an encryption
    replies = party.exchange(
        {peer: _to_array(answers, peer_width)}, {peer: ((len(flat), cipher_width), np.uint8)}
    )[peer]
    decrypted = [private.raw_decrypt(c) % 2**RING_BITS for c in _to_ints(replies)]
    counts["decryptions"] += len(decrypted)
    shape = (len(a), *products[0].shape)
    kept = (-np.array([r % 2**RING_BITS for r in masks], dtype=object)) % 2**RING_BITS
    return np.array(decrypted, dtype=np.uint64).reshape(shape) + kept.astype(np.uint64).reshape(
        shape
    )


def _encrypted_product(kind: str, a: np.ndarray, encrypted_b: np.ndarray) -> np.ndarray:
    """Enc(a · b) or Enc(a @ b) from plaintext ring elements ``a`` and ciphertexts of ``b``."""
    if kind == "mul":
        return np.array(
            [e * int(v) for v, e in zip(a.ravel(), encrypted_b.ravel(), strict=True)], dtype=object
        ).reshape(a.shape)
    rows, inner = a.shape
    columns = encrypted_b.shape[1]
    out = np.empty((rows, columns), dtype=object)
    for i in range(rows):
        for j in range(columns):
            total = encrypted_b[0, j] * int(a[i, 0])
            for t in range(1, inner):
                total = total + encrypted_b[t, j] * int(a[i, t])
            out[i, j] = total
    return out
