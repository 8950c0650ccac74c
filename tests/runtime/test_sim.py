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
from veil.fl.local import batch_schedules
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
    transport = SimulatedTransport(module, pool, engine=engine, chunk_size=chunk_size)
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


def one_round_plan(local):
    return RoundPlan(FixedCountSampler(1), local, identity(), weighted_mean(), fedadam(), seed=0)


def test_collect_weights_clients_by_their_rows(uneven_pool):
    module = build_model("mlp", (1, 6, 6), 3, hidden=[30])
    transport = SimulatedTransport(module, uneven_pool)
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    plan = one_round_plan(LocalTraining(lr=0.1, batch_size=4, steps=2))
    updates, _, events, losses = transport.collect(params, np.array([1, 4]), 1, plan, None, None)
    assert updates.weights.tolist() == uneven_pool.sizes[[1, 4]].tolist()
    assert updates.client_ids.tolist() == [1, 4] and events == [] and losses.shape == (2,)
    assert transport.engine == "auto" and transport.last_engine == "lowrank"
    long_plan = one_round_plan(LocalTraining(lr=0.1, batch_size=4, epochs=30))
    transport.collect(params, np.array([1, 4]), 1, long_plan, None, None)
    assert transport.last_engine == "fused"


def test_collect_an_empty_round(uneven_pool):
    module = build_model("logistic", (1, 6, 6), 3)
    transport = SimulatedTransport(module, uneven_pool)
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    plan = one_round_plan(LocalTraining(lr=0.1, batch_size=4, steps=2))
    updates, _, _, losses = transport.collect(params, np.array([], dtype=int), 1, plan, None, None)
    assert updates.num_clients == 0 and losses.shape == (0,)
    assert updates.deltas["1.weight"].shape == (0, 3, 36) and transport.last_engine is None


def test_transport_leaves_the_callers_module_alone(uneven_pool):
    module = build_model("logistic", (1, 6, 6), 3)
    transport = SimulatedTransport(module, uneven_pool)
    assert transport.module is not module


def test_huge_batch_size_costs_no_more_than_the_largest_client(uneven_pool):
    index, mask = uneven_pool.schedules(
        np.arange(12), 1, 0, LocalTraining(lr=0.1, batch_size=10**7, epochs=1)
    )
    assert (
        index.shape == (12, 1, int(uneven_pool.sizes.max()))
        and mask.sum() == uneven_pool.sizes.sum()
    )


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
    per_client = 4 * (50 * 884 + 50 * 50 + 50 * 100)  # U and V, the Gram matrix, U W_0ᵀ
    chunk = default_chunk_size("lowrank", module, rows=50, device=cpu)
    assert chunk * per_client <= 64 * 2**20 < (chunk + 1) * per_client
    huge = torch.nn.Sequential(torch.nn.Linear(10**4, 10**4))
    assert default_chunk_size("vmap", huge, rows=50, device=cpu) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_schedules_equal_cpu_schedules(uneven_pool):
    plan = LocalTraining(lr=0.1, batch_size=8, epochs=2)
    cpu = batch_schedules(uneven_pool.sizes, np.arange(12), 3, 5, plan)
    gpu = batch_schedules(uneven_pool.sizes, np.arange(12), 3, 5, plan, device="cuda")
    assert torch.equal(cpu, gpu.cpu())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(uneven_pool):
    module = build_model("mlp", (1, 6, 6), 3, hidden=[10])
    cpu, _ = train_rounds(copy.deepcopy(module), uneven_pool, "fused", None)
    pool = ClientPool(uneven_pool.x.cuda(), uneven_pool.y.cuda(), uneven_pool.offsets)
    for engine in ("fused", "vmap"):
        gpu, _ = train_rounds(copy.deepcopy(module), pool, engine, None)
        for k in cpu:
            assert torch.allclose(cpu[k], gpu[k].cpu(), atol=1e-4), (engine, k)
