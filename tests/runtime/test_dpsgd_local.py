import warnings

import numpy as np
import pytest
import torch
from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent, SelfComposedDpEvent

from veil.fl.local import LocalTraining, SampleLevelDP
from veil.models import build_model
from veil.params import leading_axis_l2_norms
from veil.privacy.ledger import SubjectEvent
from veil.privacy.per_sample import clip_factors, per_sample_gradients
from veil.randomness import InsecureNoiseWarning, noise_generator
from veil.runtime.dpsgd_local import client_dpsgd_events, client_sample_rates, train_dpsgd_clients


def key(seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        return noise_generator(seed_for_testing=seed)


def reference(module, params, x, y, plan):
    """Full-batch (q = 1) DP-SGD of one client without noise, step by step, dividing by B."""
    p = {k: v.clone() for k, v in params.items()}
    for _ in range(plan.num_steps(len(y))):
        grads = per_sample_gradients(module, p, x, y)
        factors = clip_factors(leading_axis_l2_norms(grads), plan.dp.max_grad_norm)
        for k, g in grads.items():
            p[k] = p[k] - plan.lr * torch.tensordot(factors, g, dims=1) / plan.batch_size
    return {k: p[k] - params[k] for k in p}


def test_without_noise_it_is_clipped_full_batch_sgd(uneven_pool):
    torch.manual_seed(0)
    module = build_model("mlp", (1, 6, 6), 3, hidden=[5])
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    plan = LocalTraining(lr=0.3, batch_size=64, steps=3, dp=SampleLevelDP(1e-9, 0.5))  # q = 1
    ids = np.array([0, 4, 7])
    deltas, losses = train_dpsgd_clients(module, params, uneven_pool, ids, plan, key())
    for i, c in enumerate(ids):
        start, stop = uneven_pool.offsets[c], uneven_pool.offsets[c + 1]
        expected = reference(
            module, params, uneven_pool.x[start:stop], uneven_pool.y[start:stop], plan
        )
        for k in params:
            assert torch.allclose(deltas[k][i], expected[k], atol=1e-5), (c, k)
    assert losses.shape == (3,) and (losses > 0).all()


def test_noise_has_the_calibrated_scale(uneven_pool):
    module = build_model("logistic", (1, 6, 6), 3)
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    ids = np.array([5])
    n = int(uneven_pool.sizes[5])
    quiet = LocalTraining(lr=1.0, batch_size=64, steps=1, dp=SampleLevelDP(1e-9, 0.5))
    noisy = LocalTraining(lr=1.0, batch_size=64, steps=1, dp=SampleLevelDP(2.0, 0.5))
    base, _ = train_dpsgd_clients(module, params, uneven_pool, ids, quiet, key(1))
    draws = torch.cat(
        [
            (
                train_dpsgd_clients(module, params, uneven_pool, ids, noisy, key(s))[0]["1.weight"]
                - base["1.weight"]
            ).flatten()
            for s in range(20)
        ]
    )
    assert n < 64  # q = 1: the noise is still divided by B, never by the client's row count
    assert float(draws.std()) == pytest.approx(2.0 * 0.5 / 64, rel=0.05)


def test_one_more_row_changes_the_step_by_that_rows_clipped_gradient_only():
    """Add/remove adjacency: with q = 1, adding row z moves a noiseless step by −lr·clip(g_z)/B
    exactly; dividing by the row count would also rescale every other row (the audited leak)."""
    from veil.runtime.pool import ClientPool

    torch.manual_seed(1)
    module = build_model("logistic", (4,), 2)
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    x, y = np.random.default_rng(0).normal(size=(5, 4)), np.array([0, 1, 1, 0, 1])
    pools = [ClientPool.from_arrays([x[:n]], [y[:n]]) for n in (4, 5)]
    plan = LocalTraining(lr=1.0, batch_size=16, steps=1, dp=SampleLevelDP(1e-9, 0.5))
    without, with_z = (
        train_dpsgd_clients(module, params, pool, np.array([0]), plan, key())[0] for pool in pools
    )
    z = (torch.as_tensor(x[4:], dtype=torch.float32), torch.as_tensor(y[4:]))
    grad = per_sample_gradients(module, params, *z)
    factor = clip_factors(leading_axis_l2_norms(grad), 0.5)
    for k in params:
        expected = -torch.tensordot(factor, grad[k], dims=1) / 16
        torch.testing.assert_close(with_z[k][0] - without[k][0], expected, atol=1e-6, rtol=0)


def test_each_client_gets_its_own_event():
    plan = LocalTraining(lr=0.1, batch_size=8, epochs=2, dp=SampleLevelDP(1.5, 1.0))
    events = client_dpsgd_events(np.array([2, 0]), np.array([40, 4]), plan, ["a", "b", "c"])
    sampled = PoissonSampledDpEvent(0.2, GaussianDpEvent(1.5))
    assert events[0] == SubjectEvent("c", SelfComposedDpEvent(sampled, 10))
    assert events[1] == SubjectEvent(
        "a", SelfComposedDpEvent(PoissonSampledDpEvent(1.0, GaussianDpEvent(1.5)), 2)
    )
    assert client_sample_rates(np.array([4, 16, 64]), 16).tolist() == [1.0, 1.0, 0.25]
