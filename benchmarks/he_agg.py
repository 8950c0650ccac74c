"""W4: encrypted aggregation of 10 clients × 100,000 float32 values.

- veil: packed BFV (`veil.he`). Each client clips to [−α, α] (α = 0.1), quantizes to 16 bits by
  stochastic rounding, packs two values per slot with 4 padding bits, and encrypts under the key
  holder's public key (TenSEAL, N = 4096, 128-bit). The aggregator adds the ciphertexts and the
  key holder decrypts the sum.
- Peer: TenSEAL CKKS with its usual vectors (N = 8192, primes [60, 40, 40, 60], scale 2^40,
  4096 floats per ciphertext), the same public-key flow, no packing.
- Paillier: `phe` 2048-bit, one value per ciphertext as phe encodes floats, on a 200-value slice
  (it runs at hundreds of values per second).

Encrypt throughput counts everything a client does (quantize, pack, encrypt, serialize), on one
thread, best of ``repeats`` over the clients. Expansion is ciphertext bytes over 4 bytes per
value. ``max_abs_error`` is the decrypted mean against the float mean, next to one quantization
step (2α / (2^16 − 2)).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from phe import paillier

from veil.he.aggregation import aggregate, decrypt_sum, encrypt_update, layout_for
from veil.he.schemes import generate

W4 = {"clients": 10, "values": 100_000}
QUICK = {"clients": 4, "values": 20_000}
CLIP = 0.1
PAILLIER_SLICE = 200


def client_updates(clients: int, values: int, seed: int = 0) -> np.ndarray:
    """Float32 updates, uniform in ±0.05 (inside the clip range)."""
    return np.random.default_rng(seed).uniform(-0.05, 0.05, (clients, values)).astype(np.float32)


def time_scheme(name: str, x: np.ndarray) -> dict:
    """Encrypt every client's update, add, decrypt; throughput, expansion and error."""
    holder = generate(name)
    public = holder.public()
    layout = layout_for(public, len(x), CLIP, 16)
    rng = np.random.default_rng(1)
    updates, seconds = [], []
    for c, row in enumerate(x):
        started = time.perf_counter()
        updates.append(encrypt_update(public, c, row, layout, rng))
        seconds.append(time.perf_counter() - started)
    started = time.perf_counter()
    total = aggregate(public, updates, layout)
    aggregate_s = time.perf_counter() - started
    started = time.perf_counter()
    plain = decrypt_sum(holder, total, layout, len(x))
    decrypt_s = time.perf_counter() - started
    size = sum(len(c) for c in updates[0].chunks)
    mean_error = np.abs(plain / len(x) - x.astype(np.float64).mean(0)).max()
    return {
        "scheme": name,
        "encrypt_values_per_s": x.shape[1] / float(np.median(seconds)),
        "encrypt_s_per_client": float(np.median(seconds)),
        "expansion": size / (4 * x.shape[1]),
        "aggregate_s": aggregate_s,
        "decrypt_s": decrypt_s,
        "max_abs_error": float(mean_error),
        "quantization_step": (2 * CLIP / (2 * layout.offset)) if layout else None,
        "lanes_per_slot": layout.lanes if layout else None,
    }


def time_paillier(x: np.ndarray) -> dict:
    """phe's own float encryption, one value per ciphertext, on a slice."""
    public, private = paillier.generate_paillier_keypair(n_length=2048)
    values = x[0, :PAILLIER_SLICE].astype(float).tolist()
    started = time.perf_counter()
    encrypted = [public.encrypt(v) for v in values]
    seconds = time.perf_counter() - started
    size = sum((e.ciphertext(be_secure=False).bit_length() + 7) // 8 for e in encrypted)
    error = max(abs(private.decrypt(e) - v) for e, v in zip(encrypted, values, strict=True))
    return {
        "name": "phe-paillier-2048",
        "values": PAILLIER_SLICE,
        "encrypt_values_per_s": PAILLIER_SLICE / seconds,
        "expansion": size / (4 * PAILLIER_SLICE),
        "max_abs_error": error,
    }


def run_benchmark(quick: bool = False, log: Callable[[str], None] = print) -> dict:
    """W4 for veil's packed BFV, TenSEAL CKKS and phe Paillier (``veil bench he-agg``)."""
    size = QUICK if quick else W4
    x = client_updates(size["clients"], size["values"])
    log(f"veil packed BFV: {size['clients']} clients × {size['values']:,} values")
    veil = time_scheme("bfv", x)
    log(f"  {veil['encrypt_values_per_s']:,.0f} values/s, ×{veil['expansion']:.2f} bytes")
    log("TenSEAL CKKS (N = 8192, scale 2^40)")
    peer = {"name": "tenseal-ckks", **time_scheme("ckks", x)}
    log(f"  {peer['encrypt_values_per_s']:,.0f} values/s, ×{peer['expansion']:.2f} bytes")
    log(f"phe Paillier 2048-bit on {PAILLIER_SLICE} values")
    pai = time_paillier(x)
    log(f"  {pai['encrypt_values_per_s']:,.0f} values/s, ×{pai['expansion']:.1f} bytes")
    veil_paillier = time_scheme("paillier", x[:, : 20 * PAILLIER_SLICE])
    return {
        "workload": "he-agg",
        "size": size,
        "veil": veil,
        "veil_packed_paillier_3072": veil_paillier,
        "peer": peer,
        "paillier": pai,
        "ratio": veil["encrypt_values_per_s"] / peer["encrypt_values_per_s"],
        "targets": {"expansion": 4.0, "encrypt_values_per_s": 2_000_000},
    }
