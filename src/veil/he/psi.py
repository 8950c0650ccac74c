"""Private set intersection (PSI) by commutative Diffie–Hellman blinding over X25519 (ECDH-PSI).

Two parties hold sets of customer ids, ``X`` (say the bank) and ``Y`` (the partner), and want
the ids they share — to align the rows of a vertical federated model — without showing each
other the rest. The protocol is Meadows (1986), "A more efficient cryptographic matchmaking
protocol for use in the absence of a continuously available third party" (IEEE S&P), and
Huberman, Franklin & Hogg (1999), "Enhancing privacy and trust in electronic communities"
(ACM EC), here with Curve25519 scalar multiplication (X25519, RFC 7748) from `cryptography`:

1. Each party draws a fresh X25519 private key (``a`` for X, ``b`` for Y) for this run only.
2. It hashes every id to a 32-byte u-coordinate ``H(x) = SHA-256("veil/psi/x25519/v1" ‖ x)``
   and blinds it, ``a·H(x)``, i.e. ``X25519(a, H(x))``; it sends the blinded set in a random
   order (`BlindedIds`).
3. Each party blinds the other's values again and returns them *in the order received*
   (`DoublyBlindedIds`): X gets ``b·a·H(x)`` for each of its own ids, and computes
   ``a·b·H(y)`` for the peer's.
4. Scalar multiplication commutes, ``a·(b·P) = b·(a·P)``, so ``x ∈ Y`` exactly when
   ``b·a·H(x)`` is among the ``a·b·H(y)``; each party maps matches back to its own ids.

Both parties run steps 2–4 symmetrically, so both learn the intersection (and sort it, which
gives both the same row order). `run_psi` runs the whole exchange in-process.

Threat model: semi-honest (honest-but-curious) parties that follow the protocol. Each party
learns the intersection and the *size* of the other's set, nothing else: under the decisional
Diffie–Hellman assumption on Curve25519 (and its twist, since ``H`` may land on either), with
``H`` modelled as a random oracle, a blinded value ``k·H(z)`` without ``k`` looks random, and the
shuffle hides which peer value matched which position. Not covered: a malicious party can
probe ids it does not hold (nothing certifies the sets), and the intersection itself reveals
who is a customer of both. An eavesdropper sees only blinded values; use an authenticated
channel (e.g. mTLS) against an active network attacker. Ids are hashed directly to a
u-coordinate (uniform on curve ∪ twist) rather than by RFC 9380 hash-to-curve; clamped X25519
scalars clear the small cofactors of both, and an all-zero (low-order) result is rejected.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from veil.errors import ConfigError, ProtocolError, check

__all__ = [
    "BLINDED_BYTES",
    "BlindedIds",
    "DoublyBlindedIds",
    "EcdhPsiParty",
    "PsiResult",
    "hash_to_point",
    "run_psi",
]

BLINDED_BYTES = 32
_DOMAIN = b"veil/psi/x25519/v1\x00"


@dataclass(frozen=True)
class BlindedIds:
    """A party's own ids, each blinded once with its key, in random order."""

    sender: str
    values: tuple[bytes, ...]


@dataclass(frozen=True)
class DoublyBlindedIds:
    """The peer's blinded values blinded again by the sender, in the order they arrived."""

    sender: str
    values: tuple[bytes, ...]


@dataclass(frozen=True)
class PsiResult:
    """Outcome of `run_psi`: the sorted intersection and what the run cost."""

    intersection: tuple[str, ...]
    sizes: tuple[int, int]
    seconds: float
    bytes_exchanged: int


def hash_to_point(customer_id: str) -> bytes:
    """The domain-separated 32-byte X25519 u-coordinate ``SHA-256(domain ‖ utf-8(id))``."""
    return hashlib.sha256(_DOMAIN + customer_id.encode("utf-8")).digest()


def _blind(key: X25519PrivateKey, point: bytes) -> bytes:
    """``key·point`` (X25519); a wrong length or a low-order point raises `ProtocolError`."""
    if len(point) != BLINDED_BYTES:
        raise ProtocolError(
            f"a blinded id must have {BLINDED_BYTES} bytes (got {len(point)}): "
            "the peer's message is malformed"
        )
    try:
        return key.exchange(X25519PublicKey.from_public_bytes(point))
    except ValueError as error:
        raise ProtocolError(f"a blinded id is not a valid X25519 point: {error}") from None


def _check_ids(ids: Iterable[str], party: str) -> tuple[str, ...]:
    """The ids as a tuple, after checking that they are distinct, non-empty strings."""
    ids = tuple(ids)
    check(len(ids) > 0, f"{party}: PSI needs at least one id (got an empty set)")
    bad = next((i for i in ids if not isinstance(i, str)), None)
    check(bad is None, f"{party}: ids must be strings (got {type(bad).__name__} {bad!r})")
    duplicate, count = Counter(ids).most_common(1)[0]
    if count > 1:
        raise ConfigError(f"{party}: ids must be distinct ({duplicate!r} appears {count} times)")
    return ids


def _check_values(values: Sequence[bytes], what: str) -> None:
    """Blinded values must be distinct byte strings of `BLINDED_BYTES` bytes."""
    wrong = next((v for v in values if not isinstance(v, bytes) or len(v) != BLINDED_BYTES), None)
    if wrong is not None:
        length = len(wrong) if isinstance(wrong, bytes) else type(wrong).__name__
        raise ProtocolError(f"{what}: every value must be {BLINDED_BYTES} bytes (got {length})")
    if len(set(values)) != len(values):
        raise ProtocolError(f"{what}: values repeat, so the sender's ids were not distinct")


@dataclass
class EcdhPsiParty:
    """One side of ECDH-PSI: ``blinded_ids`` → ``reblind`` (the peer's) → ``intersection``.

    ``ids`` must be distinct strings. The key is fresh per party object; use one object per
    protocol run.
    """

    name: str
    ids: Sequence[str]
    _key: X25519PrivateKey = field(init=False, repr=False)
    _sent: tuple[int, ...] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self.ids = _check_ids(self.ids, self.name)
        self._key = X25519PrivateKey.generate()

    def blinded_ids(self) -> BlindedIds:
        """Step 2: ``k·H(id)`` for every own id, in an order from `secrets` (remembered)."""
        order = list(range(len(self.ids)))
        secrets.SystemRandom().shuffle(order)
        self._sent = tuple(order)
        values = tuple(_blind(self._key, hash_to_point(self.ids[i])) for i in order)
        return BlindedIds(sender=self.name, values=values)

    def reblind(self, peer: BlindedIds) -> DoublyBlindedIds:
        """Step 3: blind the peer's values again, keeping their order."""
        _check_values(peer.values, f"blinded ids from {peer.sender}")
        values = tuple(_blind(self._key, v) for v in peer.values)
        return DoublyBlindedIds(sender=self.name, values=values)

    def intersection(self, peer: BlindedIds, reply: DoublyBlindedIds) -> tuple[str, ...]:
        """Step 4: own ids in the intersection, sorted, from the peer's set and its reply."""
        if self._sent is None:
            raise ProtocolError(f"{self.name}: call blinded_ids() before intersection()")
        if len(reply.values) != len(self._sent):
            raise ProtocolError(
                f"{self.name}: the reply from {reply.sender} has {len(reply.values)} values, "
                f"but {len(self._sent)} were sent"
            )
        _check_values(peer.values, f"blinded ids from {peer.sender}")
        _check_values(reply.values, f"reply from {reply.sender}")
        theirs = {_blind(self._key, v) for v in peer.values}
        return tuple(
            sorted(
                self.ids[i] for i, v in zip(self._sent, reply.values, strict=True) if v in theirs
            )
        )


def run_psi(
    ids_a: Sequence[str], ids_b: Sequence[str], names: tuple[str, str] = ("guest", "host")
) -> PsiResult:
    """Run ECDH-PSI between two in-process parties; both must arrive at the same intersection."""
    started = time.perf_counter()
    a, b = EcdhPsiParty(names[0], ids_a), EcdhPsiParty(names[1], ids_b)
    sent_a, sent_b = a.blinded_ids(), b.blinded_ids()
    reply_to_a, reply_to_b = b.reblind(sent_a), a.reblind(sent_b)
    found_a = a.intersection(sent_b, reply_to_a)
    found_b = b.intersection(sent_a, reply_to_b)
    if found_a != found_b:
        raise ProtocolError("the two parties computed different intersections")
    messages = (sent_a, sent_b, reply_to_a, reply_to_b)
    return PsiResult(
        intersection=found_a,
        sizes=(len(a.ids), len(b.ids)),
        seconds=time.perf_counter() - started,
        bytes_exchanged=sum(BLINDED_BYTES * len(m.values) for m in messages),
    )
