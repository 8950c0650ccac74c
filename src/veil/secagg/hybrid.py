"""Post-quantum hybrid keys for SecAgg+: X25519 combined with ML-KEM-768 through HKDF.

Against harvest-now-decrypt-later, every secret that protects a client's input — the keys that
seal the Shamir shares and the pairwise mask seeds — is HKDF(X25519 secret ‖ ML-KEM secret): it
stays secret while either problem stays hard.

ML-KEM is a KEM, not a non-interactive exchange: a shared secret K exists only once one side
*encapsulates* to the other's public key and sends the ciphertext. The extra message rides on
the share-keys stage (no extra round trip): client u sends each neighbour v a ciphertext for K_{u→v}
(1,088 bytes) next to the sealed shares, which are keyed with K_{u→v}; the pair's mask seed
uses K_{lo→hi}, encapsulated by the smaller id. The advertisement carries the 1,184-byte ML-KEM
public key.

Dropout recovery needs one more piece. A classic pair seed can be recomputed by the server from
the dropped client's Shamir-shared X25519 key, but K_{lo→hi} is random, known only to lo and hi.
So each client seals a *recovery blob* — its ML-KEM private seed (for the K's it received) and
the K's it encapsulated — under a fresh key w, sends the blob to the server with its shares and
Shamir-shares w with its mask key. If it drops, t neighbours' shares open the blob and the server
cancels its masks, exactly as in the classic protocol; a live client's w is never revealed.
"""

from __future__ import annotations

from veil.errors import ProtocolError
from veil.secagg import keys

_KEM_SEED_BYTES = 64
_ENTRY_BYTES = 8 + keys.KEY_BYTES


def seal_recovery(
    w: bytes, kem_seed: bytes, sent: dict[int, bytes], round_id: bytes, owner: int
) -> bytes:
    """The blob: ML-KEM private seed, then (peer id, K_{owner→peer}) for every encapsulation."""
    body = kem_seed + b"".join(p.to_bytes(8, "big") + k for p, k in sorted(sent.items()))
    return keys.seal(keys.derive(w, b"recovery", round_id, owner), body, round_id)


def open_recovery(w: bytes, blob: bytes, round_id: bytes, owner: int):
    """(ML-KEM private key, {peer: K_{owner→peer}}) from a dropped client's blob."""
    body = keys.open_sealed(keys.derive(w, b"recovery", round_id, owner), blob, round_id)
    if len(body) < _KEM_SEED_BYTES or (len(body) - _KEM_SEED_BYTES) % _ENTRY_BYTES:
        raise ProtocolError(f"client {owner}: malformed recovery blob")
    entries = body[_KEM_SEED_BYTES:]
    sent = {
        int.from_bytes(entries[i : i + 8], "big"): entries[i + 8 : i + _ENTRY_BYTES]
        for i in range(0, len(entries), _ENTRY_BYTES)
    }
    return keys.kem_private_from_seed(body[:_KEM_SEED_BYTES]), sent
