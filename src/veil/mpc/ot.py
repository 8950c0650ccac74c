"""1-out-of-2 oblivious transfer of 16-byte strings: Naor–Pinkas over a 2048-bit MODP group.

The sender has pairs (m₀, m₁), the receiver a choice bit σ per pair; the receiver learns m_σ
and nothing about m₁₋σ, the sender learns nothing about σ. Protocol (Naor & Pinkas 2001,
"Efficient oblivious transfer protocols", §3.1, in the group of RFC 3526 group 14 with g = 2):

1. sender → receiver: a random C = g^c (whose discrete log the receiver does not know) and,
   per transfer j, R_j = g^{r_j};
2. receiver → sender: PK₀ where PK_σ = g^k and PK₁₋σ = C / g^k (so the receiver knows the
   discrete log of only one of PK₀, PK₁ = C / PK₀);
3. sender → receiver: E_b = H(PK_b^{r_j}, j, b) ⊕ m_b for b = 0, 1; the receiver opens
   E_σ with H(R_j^k, j, σ).

Semi-honest security under the computational Diffie–Hellman assumption with H (SHA-256) a
random oracle. Exponents are 320-bit (RFC 3526 §8 puts group 14's strength at 110 bits and
asks for exponents of at least twice that). Costs five modular exponentiations per transfer,
which is why only the 128 base transfers of `veil.mpc.ot_extension` use it.
"""

from __future__ import annotations

import secrets

import gmpy2
import numpy as np
from cryptography.hazmat.primitives import hashes

from veil.errors import ConfigError, ProtocolError
from veil.mpc.party import Party

__all__ = ["MODP_PRIME", "receive_ot", "send_ot"]

MODP_PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E34"
    "04DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6"
    "F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A6916"
    "3FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C"
    "32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA95"
    "6AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)  # RFC 3526, 2048-bit MODP group (group 14)
GENERATOR = 2
ELEMENT_BYTES = 256
EXPONENT_BITS = 320
MESSAGE_BYTES = 16


def _exponent() -> gmpy2.mpz:
    return gmpy2.mpz(secrets.randbits(EXPONENT_BITS) | 1 << (EXPONENT_BITS - 1))


def _to_bytes(elements: list) -> np.ndarray:
    data = b"".join(int(e).to_bytes(ELEMENT_BYTES, "big") for e in elements)
    return np.frombuffer(data, np.uint8).reshape(len(elements), ELEMENT_BYTES)


def _to_elements(array: np.ndarray) -> list[gmpy2.mpz]:
    """Group elements from their byte rows; `ProtocolError` for values outside 2..p-2."""
    elements = [gmpy2.mpz(int.from_bytes(row.tobytes(), "big")) for row in array]
    if any(not 1 < e < MODP_PRIME - 1 for e in elements):
        raise ProtocolError("oblivious transfer: the peer sent an invalid group element")
    return elements


def _key(element, index: int, bit: int) -> np.ndarray:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(int(element).to_bytes(ELEMENT_BYTES, "big"))
    digest.update(index.to_bytes(8, "big") + bytes([bit]))
    return np.frombuffer(digest.finalize()[:MESSAGE_BYTES], np.uint8)


def send_ot(party: Party, receiver: int, messages: np.ndarray) -> None:
    """Offer ``messages`` (``[count, 2, 16]`` uint8: m₀, m₁ per transfer) to ``receiver``."""
    messages = np.asarray(messages, np.uint8)
    if messages.ndim != 3 or messages.shape[1:] != (2, MESSAGE_BYTES):
        raise ConfigError(f"OT messages must be [count, 2, {MESSAGE_BYTES}] bytes")
    count, p = len(messages), MODP_PRIME
    c = gmpy2.powmod(GENERATOR, _exponent(), p)
    r = [_exponent() for _ in range(count)]
    with party.operation("base_ot"):
        offers = [c, *(gmpy2.powmod(GENERATOR, rj, p) for rj in r)]
        answer = party.exchange(
            {receiver: _to_bytes(offers)}, {receiver: ((count, ELEMENT_BYTES), np.uint8)}
        )
        pk0 = _to_elements(answer[receiver])
        encrypted = np.empty((count, 2, MESSAGE_BYTES), np.uint8)
        for j in range(count):
            shared0 = gmpy2.powmod(pk0[j], r[j], p)
            shared1 = gmpy2.powmod(c, r[j], p) * gmpy2.invert(shared0, p) % p  # (C / PK₀)^r
            encrypted[j, 0] = messages[j, 0] ^ _key(shared0, j, 0)
            encrypted[j, 1] = messages[j, 1] ^ _key(shared1, j, 1)
        party.send(receiver, encrypted)


def receive_ot(party: Party, sender: int, choices: np.ndarray) -> np.ndarray:
    """The chosen message of each transfer (``[count, 16]`` uint8) for 0/1 ``choices``."""
    choices = np.asarray(choices)
    if choices.ndim != 1 or not np.isin(choices, (0, 1)).all():
        raise ConfigError("OT choices must be a vector of 0/1 bits")
    count, p = len(choices), MODP_PRIME
    with party.operation("base_ot"):
        offers = _to_elements(party.receive(sender, (count + 1, ELEMENT_BYTES), np.uint8))
        c, pulls = offers[0], offers[1:]
        k = [_exponent() for _ in range(count)]
        pk0 = []
        for j in range(count):
            gk = gmpy2.powmod(GENERATOR, k[j], p)
            pk0.append(gk if choices[j] == 0 else c * gmpy2.invert(gk, p) % p)
        party.send(sender, _to_bytes(pk0))
        encrypted = party.receive(sender, (count, 2, MESSAGE_BYTES), np.uint8)
        return np.stack(
            [
                encrypted[j, choices[j]] ^ _key(gmpy2.powmod(pulls[j], k[j], p), j, int(choices[j]))
                for j in range(count)
            ]
        )
