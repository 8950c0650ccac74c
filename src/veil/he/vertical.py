"""Hetero (vertically partitioned) logistic regression with Paillier encryption.

The protocol of Hardy et al. (2017), "Private federated learning on vertically partitioned data
via entity resolution and additively homomorphic encryption" (arXiv:1711.10677), in the form
FATE's hetero-LR uses. Three parties, after the rows were aligned by PSI (`veil.he.psi`):

- the *guest* (the bank) holds features ``X_G`` (with a column of ones: the intercept) and the
  labels ``y ∈ {0, 1}``;
- the *host* (the partner) holds features ``X_H`` for the same customers, in the same order;
- the *arbiter* (a coordinator) holds the Paillier key pair (Paillier 1999, via ``phe`` with
  ``gmpy2``); guest and host get the public key only.

Model: ``P(y = 1 | x) = σ(z)``, ``z = X_G w_G + X_H w_H``. With ``s = 2y - 1 ∈ {-1, +1}`` the
log-loss is ``log(1 + e^{-s z})``; its second-order Taylor expansion at ``z = 0`` is
``log 2 - s z / 2 + z² / 8``, whose gradient in ``z`` is the *residual*

    d = 0.25 z - 0.5 s          (= 0.25 z + 0.5 - y, i.e. σ(z) ≈ 0.5 + 0.25 z),

and the mini-batch gradient of party ``k`` is ``g_k = X_{k,B}ᵀ d / |B| + λ w_k`` (no penalty on
the intercept). Paillier adds ciphertexts and multiplies them by plaintexts, which is all ``d``
needs — the exact sigmoid would not be computable — hence the approximation. One step:

1. host → guest: ``[[0.25 z_H]]`` for the batch rows (encrypted under the arbiter's key);
2. guest: ``[[d]] = [[0.25 z_H]] + [[0.25 z_G - 0.5 s]]`` (a fresh encryption, so the host,
   who knows its own ciphertexts' randomness, cannot strip it); guest → host: ``[[d]]``;
3. each party: ``[[X_kᵀ d]]`` homomorphically, plus a mask ``r`` drawn uniformly from ``Z_n``
   (`secrets`) → arbiter, who decrypts and returns ``X_kᵀ d + r mod n``;
4. each party removes ``r``, divides by ``|B|``, adds ``λ w_k`` and steps ``w_k -= η g_k``.

Threat model: semi-honest parties, arbiter not colluding with guest or host. The host sees only
ciphertexts; the guest sees only ciphertexts; the arbiter sees only masked sums, uniformly
distributed in ``Z_n`` (one-time pad), so it learns nothing about the gradients; each party
learns its own gradients (from which, over many steps, some information about the other's data
can be inferred — as in FATE, and the model is not differentially private). Collusion of the
arbiter with either party reveals ``d`` and hence the other's partial logits. Prediction (in
`veil.vertical_experiment`) has the host send its plaintext partial scores ``X_H w_H`` for the
rows being scored to the guest, as FATE does.

Encoding: ``phe`` fixed-point with base 16 and fixed exponents — features ``16^-6`` (≈ 6e-8),
logits ``16^-7`` — so every sum has matching exponents and no ciphertext is rescaled. Speed:
encryptions (``r^n mod n²``) dominate; they are computed in batches with
``gmpy2.powmod_base_list``, which releases the GIL, on ``threads`` threads.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import gmpy2
import numpy as np
from phe import EncodedNumber, EncryptedNumber, PaillierPublicKey, paillier

from veil.errors import ProtocolError, check

__all__ = [
    "FEATURE_EXPONENT",
    "LOGIT_EXPONENT",
    "Arbiter",
    "EncryptedVector",
    "GuestParty",
    "HeteroLRResult",
    "HostParty",
    "MaskedPlaintexts",
    "ciphertext_bytes",
    "encode_fixed",
    "encrypt_batch",
    "encrypted_weighted_sums",
    "minibatches",
    "taylor_gradient",
    "train_hetero_lr",
]

FEATURE_EXPONENT = -6  # features encoded as round(x · 16^6)
LOGIT_EXPONENT = -7  # 0.25·z and the residuals encoded as round(v · 16^7)


@dataclass(frozen=True)
class EncryptedVector:
    """A message of ciphertexts: partial logits, residuals or a masked gradient."""

    sender: str
    kind: str
    step: int
    values: tuple[EncryptedNumber, ...]


@dataclass(frozen=True)
class MaskedPlaintexts:
    """The arbiter's reply: decrypted masked values (integers mod n) and their exponent."""

    step: int
    encodings: tuple[int, ...]
    exponent: int


def ciphertext_bytes(public_key: PaillierPublicKey) -> int:
    """Bytes of one ciphertext on the wire (an element of ``Z_{n²}``)."""
    return (2 * public_key.n.bit_length() + 7) // 8


def encode_fixed(public_key: PaillierPublicKey, values: np.ndarray, exponent: int) -> list[int]:
    """``round(v · 16^-exponent) mod n`` for each value: phe's encoding with a fixed exponent."""
    scale = EncodedNumber.BASE**-exponent
    try:
        scaled = [round(float(v) * scale) for v in np.ravel(values)]
    except (OverflowError, ValueError):  # inf, or nan
        raise ProtocolError(f"cannot encode a non-finite value at exponent {exponent}") from None
    if any(abs(s) > public_key.max_int for s in scaled):
        raise ProtocolError(f"a value is too large to encode at exponent {exponent}")
    return [s % public_key.n for s in scaled]


def _obfuscators(public_key: PaillierPublicKey, count: int, threads: int) -> list[int]:
    """``count`` fresh ``r^n mod n²`` with ``r`` uniform in ``[1, n)`` (from `secrets`)."""
    n, n_square = public_key.n, public_key.nsquare
    bases = [gmpy2.mpz(secrets.randbelow(n - 1) + 1) for _ in range(count)]
    chunks = [bases[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        powers = list(pool.map(lambda chunk: gmpy2.powmod_base_list(chunk, n, n_square), chunks))
    out = [0] * count
    for i, chunk in enumerate(powers):
        out[i::threads] = [int(p) for p in chunk]
    return out


def encrypt_batch(
    public_key: PaillierPublicKey, values: np.ndarray, exponent: int, threads: int = 1
) -> list[EncryptedNumber]:
    """Paillier encryptions ``(1 + n)^m r^n mod n²`` of ``values`` at the given exponent.

    The same ciphertexts as ``public_key.encrypt`` (``raw_encrypt`` then obfuscation by
    ``r^n``), with the ``r^n`` of the whole batch computed on ``threads`` threads.
    """
    check(threads >= 1, f"threads must be >= 1 (got {threads})")
    encodings = encode_fixed(public_key, values, exponent)
    obfuscators = _obfuscators(public_key, len(encodings), threads)
    n_square = public_key.nsquare
    return [
        EncryptedNumber(public_key, public_key.raw_encrypt(m, 1) * r % n_square, exponent)
        for m, r in zip(encodings, obfuscators, strict=True)
    ]


def encrypted_weighted_sums(
    residuals: Sequence[EncryptedNumber], x: np.ndarray
) -> list[EncryptedNumber]:
    """``[[Σ_i x_ij d_i]]`` for each column ``j`` of ``x`` (``[len(residuals), d]``).

    Each ``x_ij`` is encoded at `FEATURE_EXPONENT`; a negative one multiplies ``[[-d_i]]`` by
    ``|x_ij|`` (one negation per row instead of a modular inverse per product).
    """
    check(
        x.ndim == 2 and x.shape[0] == len(residuals) > 0,
        f"x must be [{len(residuals)}, d] for {len(residuals)} residuals (got {x.shape})",
    )
    public_key = residuals[0].public_key
    scale = EncodedNumber.BASE**-FEATURE_EXPONENT
    magnitudes = np.rint(np.abs(x) * scale).astype(object)
    sums: list[EncryptedNumber | None] = [None] * x.shape[1]
    for i, d in enumerate(residuals):
        negated = d * -1 if np.any(x[i] < 0) else None
        for j in range(x.shape[1]):
            factor = EncodedNumber(public_key, int(magnitudes[i, j]), FEATURE_EXPONENT)
            term = (negated if x[i, j] < 0 else d) * factor
            sums[j] = term if sums[j] is None else sums[j] + term
    return list(sums)  # type: ignore[arg-type]


def taylor_gradient(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Plaintext ``xᵀ (0.25 z + 0.5 - y) / len(y)``: the gradient the protocol computes."""
    return x.T @ (0.25 * z + 0.5 - y) / len(y)


def minibatches(num_rows: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One epoch of mini-batches: a random permutation of the rows cut into ``batch_size``."""
    order = rng.permutation(num_rows)
    for start in range(0, num_rows, batch_size):
        yield order[start : start + batch_size]


class Arbiter:
    """Holds the Paillier key pair; decrypts masked values and nothing else.

    ``decrypted`` keeps every plaintext it has seen (an audit transcript).
    """

    def __init__(self, key_bits: int = 2048) -> None:
        check(
            key_bits >= 1024 and key_bits % 8 == 0,
            f"key_bits must be >= 1024 and a multiple of 8 (got {key_bits})",
        )
        self.public_key, self._private_key = paillier.generate_paillier_keypair(n_length=key_bits)
        self.decrypted: list[int] = []

    def decrypt(self, message: EncryptedVector) -> MaskedPlaintexts:
        """Decrypt a masked gradient to integers mod n (never decoded: they are masked)."""
        if message.kind != "masked_gradient":
            raise ProtocolError(f"the arbiter decrypts only masked gradients (got {message.kind})")
        exponents = {v.exponent for v in message.values}
        if len(exponents) != 1:
            raise ProtocolError(f"masked gradient from {message.sender} mixes exponents")
        try:
            encodings = tuple(self._private_key.decrypt_encoded(v).encoding for v in message.values)
        except ValueError as error:
            raise ProtocolError(f"cannot decrypt a value from {message.sender}: {error}") from None
        self.decrypted.extend(encodings)
        return MaskedPlaintexts(message.step, encodings, exponents.pop())


@dataclass
class _Party:
    """State shared by guest and host: features, weights, masks of the pending step."""

    name: str
    x: np.ndarray
    public_key: PaillierPublicKey
    l2: float = 0.0
    threads: int = 1
    weights: np.ndarray = field(init=False)
    _masks: tuple[int, list[int], int] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        check(self.x.ndim == 2, f"{self.name}: x must be [rows, features] (got {self.x.shape})")
        check(self.l2 >= 0, f"l2 must be >= 0 (got {self.l2})")
        self.weights = np.zeros(self.x.shape[1])

    def logits(self, rows: np.ndarray) -> np.ndarray:
        return self.x[rows] @ self.weights

    def masked_gradient(self, residuals: EncryptedVector, rows: np.ndarray) -> EncryptedVector:
        """``[[X_Bᵀ d + r]]`` with ``r`` uniform in ``Z_n`` per coordinate (kept to unmask)."""
        if len(residuals.values) != len(rows):
            raise ProtocolError(
                f"{self.name}: {len(residuals.values)} residuals for a batch of {len(rows)}"
            )
        sums = encrypted_weighted_sums(residuals.values, self.x[rows])
        n = self.public_key.n
        masks = [secrets.randbelow(n) for _ in sums]
        masked = tuple(
            s + EncodedNumber(self.public_key, r, s.exponent)
            for s, r in zip(sums, masks, strict=True)
        )
        self._masks = (residuals.step, masks, len(rows))
        return EncryptedVector(self.name, "masked_gradient", residuals.step, masked)

    def apply(self, reply: MaskedPlaintexts, learning_rate: float) -> np.ndarray:
        """Unmask the arbiter's reply, step the weights; returns the gradient used."""
        if self._masks is None or self._masks[0] != reply.step:
            raise ProtocolError(f"{self.name}: reply for step {reply.step} it did not request")
        _, masks, batch = self._masks
        self._masks = None
        n = self.public_key.n
        try:
            sums = np.array(
                [
                    EncodedNumber(self.public_key, (e - r) % n, reply.exponent).decode()
                    for e, r in zip(reply.encodings, masks, strict=True)
                ]
            )
        except (OverflowError, ValueError) as error:
            raise ProtocolError(
                f"{self.name}: the arbiter's reply is malformed ({error})"
            ) from None
        gradient = sums / batch + self.l2 * self._penalized() * self.weights
        self.weights = self.weights - learning_rate * gradient
        return gradient

    def _penalized(self) -> np.ndarray:
        return np.ones_like(self.weights)


class HostParty(_Party):
    """The party without labels: sends ``[[0.25 z_H]]`` and learns its own weights."""

    def encrypted_logits(self, rows: np.ndarray, step: int) -> EncryptedVector:
        values = encrypt_batch(
            self.public_key, 0.25 * self.logits(rows), LOGIT_EXPONENT, self.threads
        )
        return EncryptedVector(self.name, "logits", step, tuple(values))


@dataclass
class GuestParty(_Party):
    """The party with the labels ``y`` and the intercept (``x``'s first column must be 1)."""

    y: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.y.shape == self.x.shape[:1] and bool(np.isin(self.y, (0, 1)).all()),
            f"{self.name}: y must hold {self.x.shape[0]} labels in {{0, 1}}",
        )
        check(bool(np.all(self.x[:, 0] == 1)), f"{self.name}: x[:, 0] must be the intercept 1")

    def residuals(self, host_logits: EncryptedVector, rows: np.ndarray) -> EncryptedVector:
        """``[[d]] = [[0.25 z_H]] + [[0.25 z_G - 0.5 s]]``, freshly randomised."""
        if host_logits.kind != "logits" or len(host_logits.values) != len(rows):
            raise ProtocolError(f"{self.name}: expected {len(rows)} encrypted host logits")
        own = 0.25 * self.logits(rows) - 0.5 * (2.0 * self.y[rows] - 1.0)
        fresh = encrypt_batch(self.public_key, own, LOGIT_EXPONENT, self.threads)
        values = tuple(h + g for h, g in zip(host_logits.values, fresh, strict=True))
        return EncryptedVector(self.name, "residuals", host_logits.step, values)

    def _penalized(self) -> np.ndarray:
        return np.r_[0.0, np.ones(self.weights.size - 1)]


@dataclass(frozen=True)
class HeteroLRResult:
    """Trained weights (guest's intercept first), timings and traffic of `train_hetero_lr`."""

    guest_weights: np.ndarray
    host_weights: np.ndarray
    epoch_seconds: tuple[float, ...]
    bytes_exchanged: int
    decryptions: int
    key_bits: int


def train_hetero_lr(
    guest_x: np.ndarray,
    guest_y: np.ndarray,
    host_x: np.ndarray,
    *,
    epochs: int = 1,
    batch_size: int = 64,
    learning_rate: float = 0.15,
    l2: float = 0.0,
    key_bits: int = 2048,
    threads: int = 1,
    seed: int = 0,
    on_epoch: Callable[[int, np.ndarray, np.ndarray, float], None] | None = None,
) -> HeteroLRResult:
    """Mini-batch SGD of hetero LR on aligned rows (guest's ``x`` without the intercept column).

    Batch order follows ``seed`` (model randomness); masks and encryption randomness come from
    `secrets`. ``on_epoch(epoch, guest_weights, host_weights, seconds)`` runs after each epoch.
    """
    check(epochs >= 1, f"epochs must be >= 1 (got {epochs})")
    check(batch_size >= 1, f"batch_size must be >= 1 (got {batch_size})")
    check(learning_rate > 0, f"learning_rate must be > 0 (got {learning_rate})")
    check(
        guest_x.shape[0] == host_x.shape[0] > 0,
        f"guest and host need the same rows (got {guest_x.shape[0]} and {host_x.shape[0]})",
    )
    arbiter = Arbiter(key_bits)
    key = arbiter.public_key
    ones = np.ones((guest_x.shape[0], 1))
    guest = GuestParty("guest", np.hstack([ones, guest_x]), key, l2, threads, y=guest_y)
    host = HostParty("host", host_x, key, l2, threads)
    rng = np.random.default_rng(seed)
    ct, pt = ciphertext_bytes(key), (key.n.bit_length() + 7) // 8
    traffic, step, seconds = 0, 0, []
    for epoch in range(epochs):
        started = time.perf_counter()
        for rows in minibatches(guest_x.shape[0], batch_size, rng):
            logits = host.encrypted_logits(rows, step)
            residuals = guest.residuals(logits, rows)
            for party in (guest, host):
                masked = party.masked_gradient(residuals, rows)
                party.apply(arbiter.decrypt(masked), learning_rate)
                traffic += len(masked.values) * (ct + pt)
            traffic += 2 * len(rows) * ct
            step += 1
        seconds.append(time.perf_counter() - started)
        if on_epoch is not None:
            on_epoch(epoch, guest.weights.copy(), host.weights.copy(), seconds[-1])
    return HeteroLRResult(
        guest_weights=guest.weights,
        host_weights=host.weights,
        epoch_seconds=tuple(seconds),
        bytes_exchanged=traffic,
        decryptions=len(arbiter.decrypted),
        key_bits=key_bits,
    )
