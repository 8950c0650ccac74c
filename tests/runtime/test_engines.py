"""The vectorized engines reach the same client models as a plain per-client SGD loop."""

import numpy as np
import pytest
import torch

from veil.fl.local import LocalTraining
from veil.models import build_model
from veil.runtime import fused
from veil.runtime.linear_stack import supports
from veil.runtime.lowrank import dense_to_lowrank_cost, train_lowrank
from veil.runtime.sequential import train_sequential
from veil.runtime.vectorized import train_vectorized

PLANS = [
    LocalTraining(lr=0.1, batch_size=8, epochs=2, prox_mu=0.3),
    LocalTraining(lr=0.2, batch_size=16, steps=7),
]


def run(engine, module, pool, plan):
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    return engine(module, params, pool.chunk(np.arange(12), round_index=1, seed=3, plan=plan), plan)


def assert_close(a, b, tol=1e-5):
    deltas_a, loss_a = a
    deltas_b, loss_b = b
    assert deltas_a.keys() == deltas_b.keys()
    for k in deltas_a:
        assert torch.allclose(deltas_a[k], deltas_b[k], atol=tol), k
    assert torch.allclose(loss_a, loss_b, atol=tol)


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize(
    "model",
    [
        ("logistic", {}),
        ("mlp", {"hidden": [8, 5], "activation": "tanh"}),
        ("mlp", {"activation": "sigmoid"}),
    ],
)
def test_fused_and_vmap_match_the_loop(uneven_pool, plan, model):
    torch.manual_seed(0)
    module = build_model(model[0], (1, 6, 6), 3, **model[1])
    reference = run(train_sequential, module, uneven_pool, plan)
    assert_close(run(train_vectorized, module, uneven_pool, plan), reference)
    assert supports(module)
    assert_close(run(fused.train_fused, module, uneven_pool, plan), reference)
    assert_close(run(train_lowrank, module, uneven_pool, plan), reference)


@pytest.mark.parametrize("plan", PLANS)
def test_vmap_matches_the_loop_on_a_cnn(uneven_pool, plan):
    torch.manual_seed(0)
    module = build_model("cnn", (1, 6, 6), 3, channels=4)
    assert not supports(module)
    reference = run(train_sequential, module, uneven_pool, plan)
    assert_close(run(train_vectorized, module, uneven_pool, plan), reference)


@pytest.mark.parametrize("engine", [fused.train_fused, train_lowrank, train_vectorized])
def test_training_actually_moves_the_model(uneven_pool, engine):
    module = build_model("logistic", (1, 6, 6), 3)
    deltas, losses = run(engine, module, uneven_pool, PLANS[1])
    assert all(d.abs().sum(dim=tuple(range(1, d.dim()))).min() > 0 for d in deltas.values())
    assert (losses > 0).all()


def test_lowrank_handles_a_model_without_biases(uneven_pool):
    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(36, 8, bias=False), nn.ReLU(), nn.Linear(8, 3))
    reference = run(train_sequential, module, uneven_pool, PLANS[0])
    assert_close(run(train_lowrank, module, uneven_pool, PLANS[0]), reference)


def test_lowrank_cost_model_prefers_few_short_steps():
    wide = build_model("mlp", (784,), 10, hidden=[100])
    assert dense_to_lowrank_cost(wide, steps=5, batch_size=10) < 1
    assert dense_to_lowrank_cost(wide, steps=100, batch_size=32) > 1
