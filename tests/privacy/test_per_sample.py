import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import vmap
from torch.nn import functional as F

from veil.errors import ConfigError
from veil.models import mlp, small_cnn
from veil.models.resnet import resnet18
from veil.params import leading_axis_l2_norms
from veil.privacy.per_sample import (
    clip_factors,
    clipped_gradient_sum,
    per_sample_gradients,
)


def params_of(module):
    return {k: v.detach() for k, v in module.named_parameters()}


def loop_gradients(module, x, y):
    """The reference: one ordinary backward pass per sample."""
    grads = []
    for i in range(len(y)):
        module.zero_grad()
        F.cross_entropy(module(x[i : i + 1]), y[i : i + 1]).backward()
        grads.append({k: p.grad.clone() for k, p in module.named_parameters()})
    return {k: torch.stack([g[k] for g in grads]) for k in grads[0]}


def models_and_batches():
    torch.manual_seed(0)
    return [
        (mlp(12, [8], 3), torch.randn(5, 12), torch.randint(0, 3, (5,))),
        (small_cnn((1, 8, 8), 4, channels=3), torch.randn(4, 1, 8, 8), torch.randint(0, 4, (4,))),
        (resnet18(4, 3, width=4), torch.randn(3, 3, 12, 12), torch.randint(0, 4, (3,))),
    ]


@pytest.mark.parametrize(("module", "x", "y"), models_and_batches())
def test_per_sample_gradients_equal_a_loop_of_single_sample_gradients(module, x, y):
    module, x = module.double(), x.double()  # float64: compare the maths, not float32 rounding
    got = per_sample_gradients(module, params_of(module), x, y)
    expected = loop_gradients(module, x, y)
    assert got.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-9, atol=1e-12)


def test_per_sample_norms_are_joint_over_all_parameters():
    grads = {"a": torch.tensor([[3.0], [0.0]]), "b": torch.tensor([[4.0, 0.0], [0.0, 1.0]])}
    torch.testing.assert_close(leading_axis_l2_norms(grads), torch.tensor([5.0, 1.0]))


@settings(max_examples=60, deadline=None)
@given(
    norms=st.lists(st.floats(0.0, 1e6), min_size=1, max_size=20),
    max_grad_norm=st.floats(1e-3, 1e3),
)
def test_clipped_norms_never_exceed_the_bound(norms, max_grad_norm):
    norms = torch.tensor(norms, dtype=torch.float64)
    factors = clip_factors(norms, max_grad_norm)
    assert torch.all(factors <= 1) and torch.all(factors > 0)
    assert torch.all(factors * norms <= max_grad_norm)
    small = norms <= max_grad_norm / 2
    torch.testing.assert_close(factors[small], torch.ones_like(factors[small]), rtol=1e-5, atol=0)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.01, 100.0),
    max_grad_norm=st.floats(0.01, 10.0),
)
def test_every_clipped_per_sample_gradient_is_within_the_bound(seed, scale, max_grad_norm):
    generator = torch.Generator().manual_seed(seed)
    module = mlp(6, [5], 3)
    x = scale * torch.randn(4, 6, generator=generator)
    y = torch.randint(0, 3, (4,), generator=generator)
    for i in range(4):  # the sum of one sample alone is that sample's clipped gradient
        mask = torch.zeros(4)
        mask[i] = 1
        summed, _ = clipped_gradient_sum(module, params_of(module), x, y, mask, max_grad_norm)
        clipped = leading_axis_l2_norms({k: v[None] for k, v in summed.items()})
        assert clipped <= max_grad_norm * (1 + 1e-5)  # float32 rounding of the norm


def test_clipped_sum_is_the_sum_of_clipped_per_sample_gradients():
    module, x, y = models_and_batches()[0]
    grads = loop_gradients(module, x, y)
    norms = leading_axis_l2_norms(grads)
    summed, got_norms = clipped_gradient_sum(module, params_of(module), x, y, torch.ones(5), 0.1)
    factors = torch.clamp(0.1 / (norms + 1e-6), max=1)
    for k in grads:
        expected = (factors.view(-1, *[1] * (grads[k].dim() - 1)) * grads[k]).sum(0)
        torch.testing.assert_close(summed[k], expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got_norms, norms, rtol=1e-4, atol=1e-6)


def test_masked_rows_contribute_nothing():
    module, x, y = models_and_batches()[0]
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    garbage = x.clone()
    garbage[mask == 0] = 1e3 * torch.randn(3, 12)
    summed, norms = clipped_gradient_sum(module, params_of(module), garbage, y, mask, 1.0)
    keep = mask == 1
    alone, _ = clipped_gradient_sum(module, params_of(module), x[keep], y[keep], torch.ones(2), 1.0)
    for k in summed:
        torch.testing.assert_close(summed[k], alone[k])
    assert torch.all(norms[mask == 0] == 0) and torch.all(norms[keep] > 0)


def test_vmap_over_clients_equals_a_loop_over_clients():
    torch.manual_seed(1)
    module = mlp(6, [5], 3)
    clients, rows = 3, 4
    params = {k: torch.randn(clients, *v.shape) for k, v in module.named_parameters()}
    x, y = torch.randn(clients, rows, 6), torch.randint(0, 3, (clients, rows))
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    core = functools.partial(clipped_gradient_sum, module)
    summed, norms = vmap(core, in_dims=(0, 0, 0, 0, None))(params, x, y, mask, 0.5)
    for c in range(clients):
        one = {k: v[c] for k, v in params.items()}
        expected, expected_norms = clipped_gradient_sum(module, one, x[c], y[c], mask[c], 0.5)
        for k in expected:
            torch.testing.assert_close(summed[k][c], expected[k])
        torch.testing.assert_close(norms[c], expected_norms)


def test_clip_bound_must_be_positive():
    with pytest.raises(ConfigError, match=r"max_grad_norm must be > 0 \(got 0\)"):
        clip_factors(torch.ones(2), 0)
