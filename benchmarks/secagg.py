"""W3: SecAgg+ at scale — 1000 clients × 100,000 parameters, 10% dropout after masked input.

veil: every client encodes its float32 update (clip to L2 norm 1, unbiased stochastic rounding
into Z_{2^32}) and runs the four SecAgg+ stages (`veil.secagg.client`) against one server
(`veil.secagg.server`), in one process, through `veil.secagg.simulate` — real keys, signatures,
AES-GCM envelopes, ChaCha20 masks, Shamir recovery. Per party, the time spent in its own code is
measured (a client's figure includes encoding); bytes sent per client are the canonical message
sizes against plain float32 (4 bytes per parameter). ``exact`` checks the unmasked ring sum
bit-for-bit against the survivors' encoded inputs; ``max_float_error`` is the decoded sum
against the float sum. The post-quantum hybrid (X25519 + ML-KEM-768) is timed the same way.

Peer: Flower 1.41's SecAgg+ workflow (``benchmarks/flower_secagg_peer.py``) at the largest
size it finishes in a few minutes here; veil runs the same size in the same process and the
ratio is Flower's round wall time over veil's (veil's round time being the sum of all its
parties' times, i.e. run one after another on one core).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable

import numpy as np
import torch

from veil.errors import VeilError
from veil.secagg.encoding import choose_encoding, from_ring, to_ring
from veil.secagg.graph import default_neighbours, default_threshold
from veil.secagg.simulate import Federation, new_round_setup, run_round

W3 = {"clients": 1000, "params": 100_000, "dropout": 0.1}
QUICK = {"clients": 100, "params": 10_000, "dropout": 0.1}
PEER_SIZE = {"clients": 300, "params": 100_000, "dropout": 0.1}
QUICK_PEER_SIZE = {"clients": 10, "params": 10_000, "dropout": 0.1}


def client_updates(clients: int, params: int, seed: int = 0) -> np.ndarray:
    """The clients' float32 updates: uniform in ±0.5/√d per coordinate (norms ≈ 0.29)."""
    rng = np.random.default_rng(seed)
    scale = 0.5 / np.sqrt(params)
    return rng.uniform(-scale, scale, (clients, params)).astype(np.float32)


def time_veil(
    clients: int, params: int, dropout: float, hybrid: bool = False, seed: int = 0
) -> dict:
    """One SecAgg+ round of W3's shape; times, bytes and correctness."""
    updates = client_updates(clients, params, seed)
    k = default_neighbours(clients)
    t = default_threshold(k)
    encoding = choose_encoding(32, 1.0, clients, params)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    ring = to_ring(torch.from_numpy(updates), encoding, generator)
    encode_s = (time.perf_counter() - started) / clients
    dropped = np.random.default_rng([seed, 1]).choice(
        clients, int(dropout * clients), replace=False
    )
    setup = new_round_setup(
        range(clients),
        neighbours=k,
        threshold=t,
        min_survivors=t,
        bits=32,
        length=params,
        hybrid=hybrid,
        graph_seed=seed,
    )
    federation = Federation()
    for c in range(clients):
        federation.identity(c)  # long-term keys exist before the round (a PKI)
    started = time.perf_counter()
    report = run_round(
        setup, dict(enumerate(ring)), federation, {int(c): "unmasking" for c in dropped}
    )
    wall = time.perf_counter() - started
    survivors = list(report.survivors)
    expected = ring[survivors].sum(axis=0, dtype=np.uint64) % 2**32
    decoded = from_ring(report.total, encoding).numpy()
    client_s = np.array([report.client_seconds[c] for c in range(clients)]) + encode_s
    return {
        "clients": clients,
        "params": params,
        "neighbours": k,
        "threshold": t,
        "dropped_after_masked_input": len(dropped),
        "hybrid": hybrid,
        "server_s": report.server_seconds,
        "client_s": float(client_s.mean()),
        "client_s_max": float(client_s.max()),
        "round_s": wall + encode_s * clients,
        "bytes_per_client": float(np.mean(list(report.bytes_sent.values()))),
        "bytes_ratio": float(np.mean(list(report.bytes_sent.values()))) / (4 * params),
        "exact": bool(np.array_equal(report.total.astype(np.uint64), expected)),
        "max_float_error": float(
            np.abs(decoded - updates[survivors].sum(0, dtype=np.float64)).max()
        ),
    }


def time_flower(clients: int, params: int, dropout: float) -> dict:
    from flower_secagg_peer import run_flower_secagg

    run = run_flower_secagg(clients, params, dropout_fraction=dropout)
    return {
        "name": "flower-secagg+",
        "version": run.version,
        "clients": run.num_clients,
        "params": run.num_params,
        "num_shares": run.num_shares,
        "threshold": run.reconstruction_threshold,
        "dropped": run.dropped,
        "round_s": run.round_s,
        "client_s": run.client_s,
        "startup_s": run.startup_s,
        "warmup_round_s": run.warmup_round_s,
        "aggregate": "mean",
        "max_abs_error": run.max_abs_error,
    }


def run_benchmark(quick: bool = False, log: Callable[[str], None] = print) -> dict:
    """W3 for veil (classic and hybrid keys), then veil and Flower at a size both finish."""
    if importlib.util.find_spec("flwr") is None or importlib.util.find_spec("ray") is None:
        raise VeilError("secagg needs the bench extra (Flower, Ray): run `make bench`")
    size, shared = (QUICK, QUICK_PEER_SIZE) if quick else (W3, PEER_SIZE)
    log(f"veil SecAgg+: {size['clients']} clients × {size['params']:,} parameters")
    veil = time_veil(**size)
    log(
        f"  server {veil['server_s']:.2f} s, client {veil['client_s'] * 1e3:.1f} ms, "
        f"bytes ×{veil['bytes_ratio']:.4f}, exact {veil['exact']}"
    )
    log("veil SecAgg+ with X25519 + ML-KEM-768 hybrid keys")
    hybrid = time_veil(**size, hybrid=True)
    log(
        f"  server {hybrid['server_s']:.2f} s, client {hybrid['client_s'] * 1e3:.1f} ms, "
        f"bytes ×{hybrid['bytes_ratio']:.4f}, exact {hybrid['exact']}"
    )
    log(f"shared size: {shared['clients']} clients × {shared['params']:,} parameters")
    veil_shared = time_veil(**shared)
    log(f"  veil round {veil_shared['round_s']:.2f} s (all parties, one core)")
    peer = time_flower(**shared)
    ratio = peer["round_s"] / veil_shared["round_s"]
    log(f"  Flower round {peer['round_s']:.2f} s: Flower time / veil time = {ratio:.1f}")
    return {
        "workload": "secagg",
        "veil": veil,
        "veil_hybrid": hybrid,
        "shared_size": {"veil": veil_shared},
        "peer": peer,
        "ratio": ratio,
        "targets": {"server_s": 5.0, "client_s": 1.0, "bytes_ratio": 1.2},
    }
