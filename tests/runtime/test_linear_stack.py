import torch
from torch import nn

from veil.runtime.linear_stack import activation_gradient, compute_layers, linear_layers, supports


def test_supports_only_linear_stacks():
    assert supports(nn.Sequential(nn.Linear(3, 2)))
    assert supports(nn.Sequential(nn.Flatten(), nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)))
    assert not supports(nn.Sequential(nn.Linear(3, 2), nn.ReLU()))  # must end in Linear
    assert not supports(nn.Sequential(nn.Linear(3, 3), nn.GELU(), nn.Linear(3, 2)))
    assert not supports(nn.Sequential(nn.Flatten(2), nn.Linear(3, 2)))
    assert not supports(nn.Sequential(nn.Flatten()))
    assert not supports(nn.Linear(3, 2))
    assert not supports(nn.Sequential())


def test_layer_lists():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert [name for name, _ in compute_layers(model)] == ["1", "2", "3"]
    assert [name for name, _ in linear_layers(model)] == ["1", "3"]


def test_activation_gradients_match_autograd():
    z = torch.linspace(-3, 3, 13, requires_grad=True)
    for layer in (nn.ReLU(), nn.Tanh(), nn.Sigmoid()):
        out = layer(z)
        (grad,) = torch.autograd.grad(out.sum(), z)
        assert torch.allclose(activation_gradient(layer, out.detach()), grad, atol=1e-6), layer
