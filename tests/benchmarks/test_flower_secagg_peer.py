"""Tests for the Flower SecAgg+ peer harness (``benchmarks/flower_secagg_peer.py``).

The run test starts Ray and Flower's Simulation Runtime (≈20 s on a 2-core box), hence
``slow``. The harness is imported by its bare name (see conftest.py).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")

fsp = importlib.import_module("flower_secagg_peer")  # benchmarks/ is on sys.path (conftest.py)


@pytest.mark.slow
def test_defaults_and_validation():
    assert fsp.default_secagg_params(5) == (5, 3)
    assert fsp.default_secagg_params(10) == (9, 5)
    assert fsp.default_secagg_params(100) == (15, 8)
    x = fsp.client_input(0, 3, 10)
    assert x.dtype == np.float32 and np.array_equal(x, fsp.client_input(0, 3, 10))
    with pytest.raises(ValueError):
        fsp.run_flower_secagg(2, 10)
    with pytest.raises(ValueError):
        fsp.run_flower_secagg(5, 10, dropout_fraction=1.0)


@pytest.mark.slow
def test_secagg_matches_clear_mean_with_one_dropout():
    n, p, clip, q = 5, 1000, 1.0, 2**22
    run = fsp.run_flower_secagg(
        n, p, dropout_fraction=0.2, clipping_range=clip, quantization_range=q, warmup_rounds=0
    )
    assert run.version.startswith("1.")
    assert (run.num_clients, run.num_params, run.num_shares) == (n, p, 5)
    assert run.reconstruction_threshold == 3
    assert run.dropped == 1 and len(run.dropped_clients) == 1
    # The dropout happened after the masked input: Flower still includes that client.
    assert run.included_clients == tuple(range(n))
    clear = np.mean([fsp.client_input(0, c, p).astype(np.float64) for c in range(n)], axis=0)
    np.testing.assert_allclose(run.expected, clear, rtol=0, atol=1e-12)
    assert run.aggregate.shape == (p,)
    # Stochastic rounding: every input is off by less than one quantization step 2*clip/q,
    # so the mean is too.
    assert run.max_abs_error < 2 * clip / q
    assert np.max(np.abs(run.aggregate - clear)) == pytest.approx(run.max_abs_error)
    survivors = [c for c in range(n) if c not in run.dropped_clients]
    survivors_mean = np.mean([fsp.client_input(0, c, p) for c in survivors], axis=0)
    assert np.max(np.abs(run.aggregate - survivors_mean)) > 1e-2
    assert run.round_s > 0 and run.startup_s > 0 and run.client_s > 0
    assert set(run.stage_s) == {"setup", "share_keys", "collect_masked_vectors", "unmask"}
    assert run.warmup_round_s is None
