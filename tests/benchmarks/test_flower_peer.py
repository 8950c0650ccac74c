"""Tests for the Flower peer harness (``benchmarks/flower_peer.py``).

They start Ray (≈10-20 s each on a 2-core box), hence ``slow``. The harness is imported by its
bare name (see conftest.py).
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")

fp = importlib.import_module("flower_peer")  # benchmarks/ is on sys.path (conftest.py)


def _add_client_id_trainer():
    """Trainer factory: client ``c`` adds ``c + 1`` to every array and reports ``c + 1``."""

    def train(params, client_id, server_round):
        return {k: v + (client_id + 1) for k, v in params.items()}, client_id + 1

    return train


def _logged_add_client_id_trainer(log_dir: str):
    """Like ``_add_client_id_trainer``, but records each factory call (one file per call)."""
    import os
    import uuid

    Path(log_dir, f"{os.getpid()}-{uuid.uuid4().hex}").touch()
    return _add_client_id_trainer()


def _failing_trainer():
    def train(params, client_id, server_round):
        if client_id == 1:
            raise ValueError("client 1 exploded")
        return params, 1

    return train


def _weighted_mean_of_additions(client_ids):
    """Σ (c+1)·(c+1) / Σ (c+1): FedAvg of 'add c+1' weighted by num_examples=c+1."""
    n = np.array([c + 1 for c in client_ids], dtype=np.float64)
    return float((n * n).sum() / n.sum())


def _assert_sane_timings(run, rounds):
    assert len(run.round_seconds) == rounds
    assert all(s > 0 for s in run.round_seconds)
    assert run.startup_s > 0
    assert run.client_updates_per_s > 0
    assert run.threads_per_actor == 1
    assert run.num_actors == 4
    assert "num_cpus=0.5" in run.setting and "4 concurrent actors" in run.setting


def test_invalid_arguments_are_rejected_before_ray_starts():
    with pytest.raises(ValueError, match="clients_per_round"):
        fp.run_flower(
            initial_params={"w": np.zeros(3)},
            trainer_factory=_add_client_id_trainer,
            num_clients=4,
            clients_per_round=5,
            rounds=1,
        )
    with pytest.raises(ValueError, match="does not fit"):
        fp.run_flower(
            initial_params={"w": np.zeros(3)},
            trainer_factory=_add_client_id_trainer,
            num_clients=4,
            clients_per_round=2,
            rounds=1,
            client_num_cpus=3,
            total_cpus=2,
        )


@pytest.mark.slow
def test_one_round_all_clients_is_the_example_weighted_mean():
    run = fp.run_flower(
        initial_params={"w": np.zeros(3)},
        trainer_factory=_add_client_id_trainer,
        num_clients=4,
        clients_per_round=4,
        rounds=1,
        sample_all=True,
    )
    # (1·1 + 2·2 + 3·3 + 4·4) / (1 + 2 + 3 + 4) = 30 / 10 = 3. Flower sums w_i/W · x_i in
    # reply-arrival order, so allow for the last bit of float64 rounding.
    np.testing.assert_allclose(run.final_params["w"], np.full(3, 3.0), rtol=1e-12, atol=0)
    assert run.final_params["w"].dtype == np.float64
    assert run.clients_per_round_trained == [4]
    _assert_sane_timings(run, rounds=1)


@pytest.mark.slow
def test_two_rounds_keep_names_order_and_shapes(tmp_path):
    initial = {"z": np.array([0.0, 1.0, -2.0]), "a": np.zeros((2, 2), dtype=np.float32)}
    run = fp.run_flower(
        initial_params=initial,
        trainer_factory=functools.partial(_logged_add_client_id_trainer, str(tmp_path)),
        num_clients=4,
        clients_per_round=4,
        rounds=2,
        sample_all=True,
    )
    # Every round adds the weighted mean 3 to every entry.
    assert list(run.final_params) == ["z", "a"]
    np.testing.assert_allclose(run.final_params["z"], initial["z"] + 6.0, rtol=1e-12)
    np.testing.assert_allclose(run.final_params["a"], np.full((2, 2), 6.0), rtol=1e-6)
    assert run.final_params["a"].dtype == np.float32
    assert run.final_params["a"].shape == (2, 2)
    assert run.clients_per_round_trained == [4, 4]
    _assert_sane_timings(run, rounds=2)
    # The factory ran once per actor process, not once per client or round.
    pids = [f.name.split("-")[0] for f in tmp_path.iterdir()]
    assert 1 <= len(pids) <= run.num_actors
    assert len(set(pids)) == len(pids)


@pytest.mark.slow
def test_two_calls_in_one_process_with_client_sampling():
    import ray

    possible = {
        round(_weighted_mean_of_additions((i, j)), 9) for i in range(4) for j in range(i + 1, 4)
    }
    for _ in range(2):
        run = fp.run_flower(
            initial_params={"w": np.zeros(3)},
            trainer_factory=_add_client_id_trainer,
            num_clients=4,
            clients_per_round=2,
            rounds=1,
        )
        assert not ray.is_initialized()
        assert run.clients_per_round_trained == [2]
        w = run.final_params["w"]
        assert np.all(w == w[0])
        assert round(float(w[0]), 9) in possible
        _assert_sane_timings(run, rounds=1)


@pytest.mark.slow
def test_client_failure_raises_and_stops_ray():
    import ray

    with pytest.raises(RuntimeError, match="client 1 exploded"):
        fp.run_flower(
            initial_params={"w": np.zeros(3)},
            trainer_factory=_failing_trainer,
            num_clients=4,
            clients_per_round=4,
            rounds=1,
            sample_all=True,
        )
    assert not ray.is_initialized()
