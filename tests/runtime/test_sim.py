import copy

import numpy as np
import pytest
import torch

from veil.errors import ConfigError
from veil.fl import (
    FixedCountSampler,
    LocalTraining,
    RoundPlan,
    fedadam,
    identity,
    init_server_state,
    run_round,
    weighted_mean,
)
from veil.models import build_model
from veil.runtime import ClientPool, SimulatedTransport, resolve_device, resolve_engine
from veil.runtime.sim import choose_engine, default_chunk_size


def train_rounds(module, pool, engine, chunk_size, rounds=3):
    plan = RoundPlan(
        sampler=FixedCountSampler(8),
        local=LocalTraining(lr=0.1, batch_size=8, epochs=1, prox_mu=0.1),
        encoder=identity(),
        aggregator=weighted_mean(),
        server_optimizer=fedadam(lr=0.05),
        seed=11,
    )
    transport = SimulatedTransport(module, pool, seed=11, engine=engine, chunk_size=chunk_size)
    state = init_server_state({k: v.detach().clone() for k, v in module.named_parameters()}, plan)
    for _ in range(rounds):
        state, metrics = run_round(state, plan, transport)
    return state.params, metrics


@pytest.mark.parametrize(
    ("engine", "chunk_size"),
    [("vmap", 3), ("fused", 5), ("lowrank", 3), ("auto", None), ("vmap", None)],
)
def test_vectorized_global_model_equals_sequential_loop(uneven_pool, engine, chunk_size):
    torch.manual_seed(0)
    module = build_model("mlp", (1, 6, 6), 3, hidden=[10])
    reference, ref_metrics = train_rounds(module, uneven_pool, "sequential", None)
    params, metrics = train_rounds(module, uneven_pool, engine, chunk_size)
    for k in reference:
        assert torch.allclose(params[k], reference[k], atol=1e-5), k
    assert np.array_equal(metrics.client_ids, ref_metrics.client_ids)
    assert abs(metrics.train_loss - ref_metrics.train_loss) < 1e-5


def test_collect_weights_clients_by_their_rows(uneven_pool):
    module = build_model("logistic", (1, 6, 6), 3)
    transport = SimulatedTransport(module, uneven_pool, seed=0)
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    plan = LocalTraining(lr=0.1, batch_size=4, steps=2)
    updates, _, events, losses = transport.collect(
        params, np.array([1, 4]), 1, plan, identity(), None, None
    )
    assert updates.weights.tolist() == uneven_pool.sizes[[1, 4]].tolist()
    assert updates.client_ids.tolist() == [1, 4] and events == [] and losses.shape == (2,)
    assert transport.engine == "auto" and transport.last_engine == "lowrank"


def test_engine_and_device_resolution():
    nn = torch.nn
    assert resolve_engine("auto", nn.Sequential(nn.Linear(2, 2))) == "auto"
    assert resolve_engine("auto", nn.Sequential(nn.Conv2d(1, 1, 1))) == "vmap"
    with pytest.raises(ConfigError, match=r"runtime\.engine must be one of"):
        resolve_engine("jax", nn.Sequential(nn.Linear(2, 2)))
    for engine in ("fused", "lowrank"):
        with pytest.raises(ConfigError, match=f"'{engine}' needs a Sequential of Linear"):
            resolve_engine(engine, nn.Sequential(nn.Conv2d(1, 1, 1)))
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match=r"runtime\.device must be"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_auto_engine_follows_the_cost_model():
    module = build_model("mlp", (784,), 10, hidden=[100])
    assert choose_engine("auto", module, steps=5, batch_size=10) == "lowrank"
    assert choose_engine("auto", module, steps=200, batch_size=32) == "fused"
    assert choose_engine("vmap", module, steps=5, batch_size=10) == "vmap"


def test_default_chunk_size_bounds_chunk_memory():
    cpu = torch.device("cpu")
    module = torch.nn.Sequential(torch.nn.Linear(784, 100))
    chunk = default_chunk_size("fused", module, rows=50, device=cpu)
    assert chunk >= 1 and chunk * 78500 * 4 <= 8 * 2**20 < (chunk + 1) * 78500 * 4
    chunk = default_chunk_size("lowrank", module, rows=50, device=cpu)
    assert chunk * 50 * 884 * 4 <= 64 * 2**20 < (chunk + 1) * 50 * 884 * 4
    huge = torch.nn.Sequential(torch.nn.Linear(10**4, 10**4))
    assert default_chunk_size("vmap", huge, rows=50, device=cpu) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(uneven_pool):
    module = build_model("mlp", (1, 6, 6), 3, hidden=[10])
    cpu, _ = train_rounds(copy.deepcopy(module), uneven_pool, "fused", None)
    pool = ClientPool(uneven_pool.x.cuda(), uneven_pool.y.cuda(), uneven_pool.offsets)
    for engine in ("fused", "vmap"):
        gpu, _ = train_rounds(copy.deepcopy(module), pool, engine, None)
        for k in cpu:
            assert torch.allclose(cpu[k], gpu[k].cpu(), atol=1e-4), (engine, k)
