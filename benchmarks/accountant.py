"""W-accountant: seconds to account 14,000 DP-SGD steps, with veil's PLD and RDP accountants.

Workload (fixed): the Poisson-subsampled Gaussian of MNIST-style DP-SGD, noise multiplier 1.1,
batch 256 of 60,000 (q = 256/60000), 14,000 steps (about 60 epochs), δ = 1e-5, add/remove
adjacency. Each figure is the best of ``repeats`` timed calls of
``veil.privacy.accounting.dpsgd_epsilon`` (event construction, validation and accounting), after
one untimed warm-up call. The target is ≤ 1 s for each accountant.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from veil.privacy.accounting import dpsgd_epsilon

CASE = {"noise_multiplier": 1.1, "sample_rate": 256 / 60000, "steps": 14000, "delta": 1e-5}


def time_accountant(accountant: str, repeats: int) -> dict:
    """Best-of-``repeats`` seconds and the ε of one ``dpsgd_epsilon`` call on ``CASE``."""
    eps = dpsgd_epsilon(**CASE, accountant=accountant)  # warm-up: imports, first allocations
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        eps = dpsgd_epsilon(**CASE, accountant=accountant)
        best = min(best, time.perf_counter() - start)
    return {"seconds": best, "epsilon": eps, "accountant": accountant}


def run_benchmark(quick: bool = False, log: Callable[[str], None] = print) -> dict:
    """Time both accountants; return the JSON of ``veil bench accountant``."""
    repeats = 1 if quick else 5
    log(f"pld: {repeats} timed call(s) of dpsgd_epsilon for {CASE['steps']} steps")
    pld = time_accountant("pld", repeats)
    log(f"rdp: {repeats} timed call(s)")
    rdp = time_accountant("rdp", repeats)
    log(f"pld {pld['seconds']:.3f} s (ε={pld['epsilon']:.4f}); rdp {rdp['seconds']:.3f} s")
    return {"workload": "accountant", "veil": pld, "rdp": rdp, "case": dict(CASE)}
