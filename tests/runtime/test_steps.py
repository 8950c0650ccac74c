import torch
from torch.nn import functional as F

from veil.runtime.steps import cross_entropy_gradient, mean_over_active_steps, step_weights


def test_step_weights_average_real_slots_only():
    weights, active = step_weights(torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    assert torch.equal(weights, torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    assert torch.equal(active, torch.tensor([1.0, 0.0]))


def test_cross_entropy_gradient_matches_autograd():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5, requires_grad=True)
    target = torch.randint(0, 5, (3, 4))
    weights, _ = step_weights(torch.tensor([[1.0, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]))
    loss, delta = cross_entropy_gradient(logits.detach().clone(), target, weights)
    per_row = F.cross_entropy(logits.reshape(-1, 5), target.reshape(-1), reduction="none").view(
        3, 4
    )
    reference = (per_row * weights).sum(1)
    (grad,) = torch.autograd.grad(reference.sum(), logits)
    assert torch.allclose(loss, reference.detach(), atol=1e-6)
    assert torch.allclose(delta, grad, atol=1e-6)


def test_mean_over_active_steps_ignores_empty_steps():
    mask = torch.tensor([[[1.0], [0.0], [1.0]], [[0.0], [0.0], [0.0]]])
    assert torch.equal(
        mean_over_active_steps(torch.tensor([4.0, 0.0]), mask), torch.tensor([2.0, 0.0])
    )
