import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from veil.errors import ConfigError
from veil.models import mlp, small_cnn
from veil.models.resnet import resnet18
from veil.privacy.dpsgd_bookkeeping import BookKeeping
from veil.privacy.per_sample import clipped_gradient_sum


def params_of(module):
    return {k: v.detach() for k, v in module.named_parameters()}


def models_and_batches():
    torch.manual_seed(0)
    return {
        "mlp": (mlp(12, [8], 3), torch.randn(6, 12), torch.randint(0, 3, (6,))),
        "cnn": (small_cnn((1, 28, 28), 10), torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))),
        "resnet": (resnet18(10, 3, width=8), torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))),
    }


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_fast_path_equals_the_generic_torch_func_path(name):
    module, x, y = models_and_batches()[name]
    mask = torch.tensor([1.0, 1, 1, 1, 0, 1])
    expected, expected_norms = clipped_gradient_sum(module, params_of(module), x, y, mask, 0.5)
    keeper = BookKeeping(module)
    summed, norms = keeper.clipped_gradient_sum(x, y, mask, 0.5)
    torch.testing.assert_close(norms, expected_norms, rtol=1e-4, atol=1e-6)
    assert summed.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(summed[k], expected[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_fast_path_norms_equal_a_loop_of_single_sample_gradients(name):
    module, x, y = models_and_batches()[name]
    module, x = module.double(), x.double()  # float64: compare the maths, not float32 rounding
    expected = []
    for i in range(len(y)):
        module.zero_grad()
        F.cross_entropy(module(x[i : i + 1]), y[i : i + 1]).backward()
        expected.append(torch.sqrt(sum(p.grad.pow(2).sum() for p in module.parameters())))
    _, norms = BookKeeping(module).clipped_gradient_sum(x, y, torch.ones(len(y)), 1.0)
    torch.testing.assert_close(norms, torch.stack(expected), rtol=1e-10, atol=0)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.01, 100.0), clip=st.floats(0.01, 10.0))
def test_every_clipped_per_sample_gradient_is_within_the_bound(seed, scale, clip):
    generator = torch.Generator().manual_seed(seed)
    module = small_cnn((1, 6, 6), 3, channels=2)
    x = scale * torch.randn(3, 1, 6, 6, generator=generator)
    y = torch.randint(0, 3, (3,), generator=generator)
    keeper = BookKeeping(module)
    for i in range(3):  # the sum over one sample alone is that sample's clipped gradient
        summed, _ = keeper.clipped_gradient_sum(x, y, torch.eye(3)[i], clip)
        norm = torch.sqrt(sum(v.pow(2).sum() for v in summed.values()))
        assert norm <= clip * (1 + 1e-5)  # float32 rounding of the norm


def test_user_backward_of_a_mean_loss_matches_the_sum():
    module, x, y = models_and_batches()["cnn"]
    keeper = BookKeeping(module)
    expected, expected_norms = keeper.clipped_gradient_sum(x, y, torch.ones(6), 1.0)
    F.cross_entropy(module(x), y).backward()
    summed, norms = keeper.clipped_sum(1.0, loss_reduction="mean")
    torch.testing.assert_close(norms, expected_norms)
    for k in expected:
        torch.testing.assert_close(summed[k], expected[k])


def test_parameters_keep_their_flags_and_get_no_grad_from_the_fast_path():
    module, x, y = models_and_batches()["resnet"]
    module.head.bias.requires_grad_(False)
    flags = {k: p.requires_grad for k, p in module.named_parameters()}
    summed, _ = BookKeeping(module).clipped_gradient_sum(x, y, torch.ones(6), 1.0)
    assert {k: p.requires_grad for k, p in module.named_parameters()} == flags
    assert all(p.grad is None for p in module.parameters())
    assert "head.bias" not in summed and "head.weight" in summed


def test_flags_are_restored_when_the_forward_pass_fails():
    module = mlp(4, [3], 2)
    BookKeeping(module)
    with pytest.raises(RuntimeError):
        module(torch.zeros(2, 5))
    assert all(p.requires_grad for p in module.parameters())


def test_a_layer_whose_output_is_unused_gets_zeros():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.used, self.unused = nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x):
            h = self.body(x)
            self.unused(h)
            return self.used(h)

    torch.manual_seed(0)
    module, x, y = TwoHeads(), torch.randn(5, 3), torch.randint(0, 2, (5,))
    expected, _ = clipped_gradient_sum(module, params_of(module), x, y, torch.ones(5), 1.0)
    summed, _ = BookKeeping(module).clipped_gradient_sum(x, y, torch.ones(5), 1.0)
    assert torch.all(summed["unused.weight"] == 0) and torch.all(summed["unused.bias"] == 0)
    torch.testing.assert_close(summed["body.weight"], expected["body.weight"])


def test_an_empty_batch_gives_zeros():
    module, x, y = models_and_batches()["cnn"]
    keeper = BookKeeping(module)
    F.cross_entropy(module(x[:0]), y[:0]).backward()
    summed, norms = keeper.clipped_sum(1.0, "mean")
    assert norms.shape == (0,) and all(torch.all(v == 0) for v in summed.values())


def test_remove_detaches_the_hooks():
    module, x, y = models_and_batches()["mlp"]
    keeper = BookKeeping(module)
    keeper.remove()
    F.cross_entropy(module(x), y).backward()
    assert all(p.grad is not None for p in module.parameters())
    with pytest.raises(ConfigError, match="no forward and backward pass was captured"):
        keeper.clipped_sum(1.0)


def test_refuses_tied_weights():
    module = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    module[1].weight = module[0].weight
    with pytest.raises(ConfigError, match=r"parameters 0.weight and 1.weight are the same tensor"):
        BookKeeping(module)


def test_refuses_a_layer_that_runs_twice():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(3, 3)

        def forward(self, x):
            return self.layer(torch.relu(self.layer(x)))

    keeper = BookKeeping(Twice())
    with pytest.raises(ConfigError, match=r"layer layer ran 2 times in one pass"):
        keeper.clipped_gradient_sum(torch.randn(2, 3), torch.tensor([0, 1]), torch.ones(2), 1.0)


def test_refuses_an_input_modified_in_place_after_the_layer_ran():
    class Shift(nn.Module):
        def __init__(self):
            super().__init__()
            self.shift = nn.Parameter(torch.ones(3))

        def forward(self, a):
            return a + self.shift  # autograd keeps no copy of a: only its version shows a change

    class Overwrites(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = Shift()

        def forward(self, x):
            h = x + 0
            out = self.layer(h)
            h.zero_()
            return out

    keeper = BookKeeping(Overwrites())
    with pytest.raises(ConfigError, match="input of layer layer was modified in place"):
        keeper.clipped_gradient_sum(torch.randn(2, 3), torch.tensor([0, 1]), torch.ones(2), 1.0)


def test_refuses_a_layer_called_with_keyword_arguments():
    class Keyword(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(3, 2)

        def forward(self, x):
            return self.layer(input=x)

    keeper = BookKeeping(Keyword())
    with pytest.raises(ConfigError, match="layer layer was called with keyword arguments"):
        keeper.clipped_gradient_sum(torch.randn(2, 3), torch.tensor([0, 1]), torch.ones(2), 1.0)


def test_refuses_batch_norm():
    with pytest.raises(ConfigError, match=r"1 \(BatchNorm1d\)"):
        BookKeeping(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))


def test_refuses_a_loss_without_trainable_parameters():
    module = nn.Linear(3, 2)
    module.requires_grad_(False)
    keeper = BookKeeping(module)
    with pytest.raises(ConfigError, match="depends on no trainable parameter"):
        keeper.clipped_gradient_sum(torch.randn(2, 3), torch.tensor([0, 1]), torch.ones(2), 1.0)


def test_refuses_a_forward_pass_without_a_backward_pass():
    module, x, _ = models_and_batches()["mlp"]
    keeper = BookKeeping(module)
    module(x)
    with pytest.raises(ConfigError, match=r"no backward pass reached the model .*loss.backward"):
        keeper.clipped_sum(1.0)


def test_loss_reduction_is_checked():
    keeper = BookKeeping(nn.Linear(3, 2))
    with pytest.raises(ConfigError, match=r"loss_reduction must be 'sum' or 'mean' \(got 'max'\)"):
        keeper.clipped_sum(1.0, "max")
