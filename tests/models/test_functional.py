import math

import torch
from torch.func import vmap

from veil.models import FunctionalModel, cross_entropy_and_accuracy, mlp
from veil.params import broadcast


def test_apply_matches_module_and_vmaps_over_clients():
    torch.manual_seed(0)
    module = mlp(5, [4], 3)
    model = FunctionalModel(module)
    params = model.init_params()
    x = torch.randn(6, 5)
    assert torch.allclose(model.apply(params, x), module(x))
    stacked = broadcast(params, 2)
    stacked["1.weight"][1] = 0.0
    out = vmap(model.apply, in_dims=(0, None))(stacked, x)
    assert torch.allclose(out[0], module(x)) and not torch.allclose(out[1], module(x))


def test_init_params_are_detached_copies():
    module = mlp(5, [4], 3)
    params = FunctionalModel(module).init_params()
    params["1.weight"].add_(1.0)
    assert not torch.equal(params["1.weight"], module[1].weight)
    assert not params["1.weight"].requires_grad


def test_cross_entropy_and_accuracy_against_direct_computation():
    torch.manual_seed(1)
    module = mlp(5, [4], 3)
    model = FunctionalModel(module)
    x, y = torch.randn(50, 5), torch.randint(0, 3, (50,))
    loss, acc = cross_entropy_and_accuracy(model, model.init_params(), x, y, batch_size=7)
    logits = module(x)
    assert abs(loss - torch.nn.functional.cross_entropy(logits, y).item()) < 1e-5
    assert acc == int((logits.argmax(1) == y).sum()) / 50
    assert all(
        map(math.isnan, cross_entropy_and_accuracy(model, model.init_params(), x[:0], y[:0]))
    )
