"""Encrypted inference: the server scores CKKS-encrypted features without seeing them.

Protocol (one round trip, semi-honest server)::

    client (secret key)                               server (model, public context only)
    x ──► EncryptedQuery(key_id, Enc(x)) ───────────► Enc(s(x)) = evaluate(model, Enc(x))
    s(x) = Dec(...) ◄── EncryptedScore(key_id, Enc(s(x)))

The client builds the CKKS context (Cheon, Kim, Kim & Song 2017) with `veil.he.context`, keeps its
secret key and publishes only the public context (public, relinearization and, for rotations,
Galois keys); `key_id` names it and every message carries that id (`check_key_id`).

Models, compiled to one exact form ``s(x) = xᵀ(A x + g) + k`` (`QuadraticScore`):

- logistic regression ``s(x) = w·x + b``: ``A = 0``, ``g = w``, ``k = b``; multiplicative depth 1.
- MLP ``d → m → 1`` with the quadratic activation ``a(t) = c0 + c1 t + c2 t²`` (CryptoNets-style,
  Gilad-Bachrach et al. 2016; default ``t/2 + t²/4``, which agrees with ReLU at ``t ∈ {-2, 0, 2}``):
  with ``h = W1 x + b1`` and ``D = diag(w2)``, ``Σ_j w2_j a(h_j) + b2`` expands exactly to
  ``A = c2 W1ᵀ D W1``, ``g = W1ᵀ (c1 w2 + 2 c2 w2 ⊙ b1)``, ``k = b2 + Σ_j w2_j (c0 + c1 b1_j +
  c2 b1_j²)``. Depth 2 (one plaintext and one ciphertext product), not the 3 of a layer-by-layer
  evaluation, and one d×d matrix product whatever the hidden width.

The score returned is the logit ``s(x)``, not a polynomial sigmoid: the client applies the exact
sigmoid after decryption. A server-side approximation would cost depth and accuracy and hide
nothing (the sigmoid is a bijection).

Packings: ``"sample"`` — one sample per `ts.CKKSVector`; the server computes ``x·(x·A + g) + k``
with one diagonal-method product (Halevi & Shoup 2014) and one dot product, which need Galois keys
for rotations. ``"batch"`` — a `ts.CKKSTensor` with one ciphertext per feature and up to N/2
samples in its slots; only slot-wise products, no rotations, no Galois keys.

Parameters (`parameters_for`): N = 8192, scale 2^40, primes [60, 40, 60] (depth 1, log2 Q = 160)
or [60, 40, 40, 60] (depth 2, log2 Q = 200), within the 128-bit bound of 218 bits for N = 8192
(HomomorphicEncryption.org standard). N = 4096 (at most 109 bits) leaves a special prime of at most
38 bits, whose key-switching noise gave errors of 6e-4 to 5e-2 on the logistic score: above 1e-3.

Threat model:

- The server learns nothing about the features beyond their count and the number of queries:
  ciphertexts are IND-CPA under RLWE at 128-bit parameters, and every query has the same size.
- The client learns the score, and can query at will: ``d + 1`` chosen queries recover a logistic
  model exactly, ``(d + 1)(d + 2) / 2`` (496 for d = 30) the quadratic form of the MLP. Rate-limit
  and audit clients, or release noised scores, where the model is the asset.
- No circuit privacy: the returned ciphertext is not re-randomized or noise-flooded, so a client
  holding the secret key may learn more about the weights than the rounded score.
- CKKS decryptions leak the noise, from which the secret key can be recovered (Li & Micciancio
  2021): the server never receives a decryption. A client that reports results back should send
  a rounded score or the label, never a raw decryption.
- Messages carry no authentication and scores are not verifiable: the transport (mTLS) must bind
  them to the parties, and a malicious server can return a wrong score.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import tenseal as ts

from veil.data import federate, load_dataset
from veil.errors import ProtocolError, check
from veil.he.context import (
    check_key_id,
    check_security,
    ckks_context,
    key_id,
    load_public_context,
    load_vector,
    public_bytes,
)
from veil.he.quadratic_models import (
    INFERENCE_MODELS,
    QuadraticScore,
    compile_model,
    plaintext_scores,
    train_model,
)

PACKINGS = ("sample", "batch")
_PRIMES = {1: (60, 40, 60), 2: (60, 40, 40, 60)}  # by multiplicative depth, N = 8192


@dataclass(frozen=True)
class CkksParameters:
    """CKKS parameters; ``depth`` = number of rescalings = data primes after the first."""

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    galois_keys: bool

    @property
    def depth(self) -> int:
        return len(self.coeff_mod_bit_sizes) - 2

    def as_dict(self) -> dict:
        return {
            "scheme": "CKKS",
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "log2_q": sum(self.coeff_mod_bit_sizes),
            "scale_bits": self.scale_bits,
            "depth": self.depth,
            "galois_keys": self.galois_keys,
            "security_bits": 128,
        }


def parameters_for(depth: int, packing: str) -> CkksParameters:
    """The smallest 128-bit-secure parameters for ``depth`` at a score error well below 1e-3."""
    check(depth in _PRIMES, f"depth must be one of {sorted(_PRIMES)} (got {depth})")
    check(packing in PACKINGS, f"packing must be one of {PACKINGS} (got {packing!r})")
    parameters = CkksParameters(8192, _PRIMES[depth], 40, galois_keys=packing == "sample")
    check_security(parameters.poly_modulus_degree, list(parameters.coeff_mod_bit_sizes))
    return parameters


@dataclass(frozen=True)
class EncryptedQuery:
    """Client → server: features encrypted under the key named by ``key_id``."""

    key_id: bytes
    ciphertext: bytes
    packing: str  # "sample": one CKKSVector; "batch": a CKKSTensor, samples in the slots


@dataclass(frozen=True)
class EncryptedScore:
    """Server → client: the encrypted logit(s) of one query."""

    key_id: bytes
    ciphertext: bytes
    packing: str


class InferenceClient:
    """The data owner: holds the CKKS secret key, encrypts features and decrypts scores."""

    def __init__(self, parameters: CkksParameters) -> None:
        self.parameters = parameters
        self._context = ckks_context(
            parameters.poly_modulus_degree,
            list(parameters.coeff_mod_bit_sizes),
            parameters.scale_bits,
            galois_keys=parameters.galois_keys,
        )
        self.public_context = public_bytes(self._context)  # all the server ever receives
        self.key_id = key_id(self.public_context)

    def encrypt(self, features: np.ndarray) -> EncryptedQuery:
        """One sample ``[d]`` in one CKKS vector."""
        x = _finite(features, ndim=1)
        vector = ts.ckks_vector(self._context, x.tolist())
        return EncryptedQuery(self.key_id, vector.serialize(), "sample")

    def encrypt_batch(self, features: np.ndarray) -> EncryptedQuery:
        """Samples ``[n, d]``, n ≤ N/2: ciphertext j holds feature j of every sample."""
        x = _finite(features, ndim=2)
        slots = self.parameters.poly_modulus_degree // 2
        check(1 <= x.shape[0] <= slots, f"a batch holds 1..{slots} samples (got {x.shape[0]})")
        tensor = ts.ckks_tensor(self._context, ts.plain_tensor(x), batch=True)
        return EncryptedQuery(self.key_id, tensor.serialize(), "batch")

    def decrypt(self, score: EncryptedScore) -> np.ndarray:
        """The logits ``[n]`` (n = 1 for a sample query)."""
        check_key_id(self.key_id, score.key_id, "server")
        if score.packing == "sample":
            vector = load_vector(self._context, score.ciphertext, "ckks", "server")
            return np.asarray(vector.decrypt()[:1], dtype=np.float64)
        _check_packing(score.packing, "server")
        tensor = _load_tensor(self._context, score.ciphertext, "server")
        return np.asarray(tensor.decrypt().tolist(), dtype=np.float64).reshape(-1)


class InferenceServer:
    """The model owner: evaluates its score on ciphertexts; never holds the secret key."""

    def __init__(self, score: QuadraticScore, public_context: bytes) -> None:
        self.score = score
        self._context = load_public_context(public_context)  # refuses a secret key
        self.key_id = key_id(public_context)
        _check_context(self._context, score.depth)
        self._linear = ts.plain_tensor(score.linear)
        self._quadratic = None if score.quadratic is None else ts.plain_tensor(score.quadratic)

    def evaluate(self, query: EncryptedQuery) -> EncryptedScore:
        """``Enc(s(x))`` for the sample or the batch of samples in ``query``."""
        check_key_id(self.key_id, query.key_id, "client")
        _check_packing(query.packing, "client")
        d = self.score.num_features
        if query.packing == "sample":
            if not self._context.has_galois_keys():
                raise ProtocolError(
                    "client: sample packing needs Galois keys in the public context "
                    "(rotations for the dot product); send them, or use batch packing"
                )
            x = load_vector(self._context, query.ciphertext, "ckks", "client")
            shape = [x.size()]
        else:
            x = _load_tensor(self._context, query.ciphertext, "client")
            shape = x.shape
        if shape != [d]:
            raise ProtocolError(f"client: query has shape {shape}, the model takes [{d}] features")
        try:
            result = self._score_sample(x) if query.packing == "sample" else self._score_batch(x)
        except (ValueError, RuntimeError) as error:
            raise ProtocolError(f"client: query cannot be evaluated ({error})") from None
        return EncryptedScore(self.key_id, result.serialize(), query.packing)

    def _score_sample(self, x: ts.CKKSVector) -> ts.CKKSVector:
        """``x·(x A + g) + k``: one diagonal-method product and one dot product (or ``x·g + k``)."""
        inner = self._linear if self._quadratic is None else x.mm(self._quadratic) + self._linear
        return x.dot(inner) + self.score.constant

    def _score_batch(self, x: ts.CKKSTensor) -> ts.CKKSTensor:
        """The same per slot: ``Σ_j x_j (Σ_i x_i A_ij + g_j) + k`` with plain-scalar products."""
        d = self.score.num_features
        row = x.reshape([1, d])
        if self._quadratic is None:
            return row.mm(self._linear.reshape([d, 1])).reshape([1]) + self.score.constant
        inner = row.mm(self._quadratic) + self._linear.reshape([1, d])
        return (row * inner).sum(2) + self.score.constant  # axis 0 is the batch (slots)


def _finite(features: np.ndarray, ndim: int) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    shape = "[d]" if ndim == 1 else "[n, d]"
    check(x.ndim == ndim and x.size > 0, f"features must have shape {shape} (got {x.shape})")
    check(bool(np.isfinite(x).all()), "features must be finite (found NaN or inf)")
    return x


def _check_packing(packing: str, sender: str) -> None:
    if packing not in PACKINGS:
        raise ProtocolError(f"{sender}: unknown packing {packing!r}; expected one of {PACKINGS}")


def _load_tensor(context: ts.Context, data: bytes, sender: str) -> ts.CKKSTensor:
    """A CKKS tensor from bytes, parse errors as `ProtocolError` (cf. `load_vector`)."""
    try:
        return ts.ckks_tensor_from(context, data)
    except (ValueError, RuntimeError, TypeError) as error:
        raise ProtocolError(f"{sender}: malformed CKKS tensor ciphertext ({error})") from None


def _check_context(context: ts.Context, depth: int) -> None:
    """A CKKS context with relinearization keys and at least ``depth`` rescalings."""
    first = context.seal_context().data.first_context_data()
    if first.parms().scheme().name != "CKKS":
        raise ProtocolError(
            f"client: encrypted inference needs a CKKS context (got {first.parms().scheme().name})"
        )
    if first.chain_index() < depth:
        raise ProtocolError(
            f"client: the public context allows {first.chain_index()} rescaling(s), the model "
            f"needs {depth}: build it with parameters_for({depth}, ...)"
        )
    if depth > 1 and not context.has_relin_keys():
        raise ProtocolError("client: the public context has no relinearization keys")


def breast_cancer_split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, y_train, x_test, y_test``: a stratified 80/20 split, standardized with the
    training rows' mean and standard deviation only (`veil.data.federate`, one client)."""
    data = federate(load_dataset("breast_cancer"), method="iid", num_clients=1, seed=seed)
    client = data.clients[0]
    return client.x_train, client.y_train, data.x_test, data.y_test


def measure_encrypted_inference(
    model: str = "logistic", samples: int = 10, *, seed: int = 0, packing: str = "sample"
) -> dict:
    """Train ``model`` on breast cancer, score ``samples`` test rows encrypted, compare, time.

    Latencies are per sample, in ms: ``encrypt`` and ``decrypt`` on the client (with
    serialization), ``evaluate`` on the server (deserialize, compute, serialize); a batch query's
    times are divided by its number of samples. Byte counts are per message.
    """
    check(model in INFERENCE_MODELS, f"model must be one of {INFERENCE_MODELS} (got {model!r})")
    check(packing in PACKINGS, f"packing must be one of {PACKINGS} (got {packing!r})")
    x_train, y_train, x_test, y_test = breast_cancer_split(seed)
    check(
        1 <= samples <= len(y_test),
        f"samples must be in 1..{len(y_test)}, the breast cancer test rows (got {samples})",
    )
    x, y = x_test[:samples].astype(np.float64), y_test[:samples]
    network = train_model(model, x_train, y_train, seed)
    score = compile_model(network)
    parameters = parameters_for(score.depth, packing)
    client = InferenceClient(parameters)
    server = InferenceServer(score, client.public_context)

    batches = [x] if packing == "batch" else list(x)
    encrypt_query = client.encrypt_batch if packing == "batch" else client.encrypt
    seconds = np.zeros(3)
    decrypted, query_bytes, score_bytes = [], [], []
    for rows in batches:
        start = time.perf_counter()
        query = encrypt_query(rows)
        encrypted = time.perf_counter()
        response = server.evaluate(query)
        evaluated = time.perf_counter()
        decrypted.append(client.decrypt(response))
        seconds += np.diff([start, encrypted, evaluated, time.perf_counter()])
        query_bytes.append(len(query.ciphertext))
        score_bytes.append(len(response.ciphertext))
    encrypted_scores = np.concatenate(decrypted)
    plain = plaintext_scores(network, x)
    encrypt_ms, evaluate_ms, decrypt_ms = (1e3 * seconds / samples).tolist()
    return {
        "model": model,
        "packing": packing,
        "samples": samples,
        "samples_per_query": len(batches[0]) if packing == "batch" else 1,
        "max_abs_error": float(np.max(np.abs(encrypted_scores - plain))),
        "accuracy_plain": float(np.mean((plain > 0) == y)),
        "accuracy_encrypted": float(np.mean((encrypted_scores > 0) == y)),
        "latency_ms": {
            "encrypt": encrypt_ms,
            "evaluate": evaluate_ms,
            "decrypt": decrypt_ms,
            "total": encrypt_ms + evaluate_ms + decrypt_ms,
        },
        "query_bytes": int(np.mean(query_bytes)),
        "score_bytes": int(np.mean(score_bytes)),
        "public_context_bytes": len(client.public_context),
        "parameters": parameters.as_dict(),
        "claim": (
            f"server saw only CKKS ciphertexts of the features (RLWE, 128-bit, "
            f"N = {parameters.poly_modulus_degree}) and never a decryption; the client learned "
            f"{samples} score(s) of the {model} model"
        ),
    }
