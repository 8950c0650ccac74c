"""Linear stacks: the models the hand-derived engines (`fused`, `lowrank`) can train.

A Linear stack is an ``nn.Sequential`` of an optional leading ``Flatten``, then ``Linear`` layers
and element-wise activations, ending in a ``Linear`` (logistic regression and MLPs). Each
activation's derivative is written in terms of its output, so a backward pass needs only the
activations saved in the forward pass.
"""

from __future__ import annotations

from torch import Tensor, nn

ACTIVATION_GRADIENTS = {
    nn.ReLU: lambda out: (out > 0).to(out.dtype),
    nn.Tanh: lambda out: 1 - out * out,
    nn.Sigmoid: lambda out: out * (1 - out),
}


def supports(module: nn.Module) -> bool:
    """Whether ``module`` is a Linear stack."""
    if not isinstance(module, nn.Sequential) or len(module) == 0:
        return False
    layers = list(module)
    if isinstance(layers[0], nn.Flatten):
        if (layers[0].start_dim, layers[0].end_dim) != (1, -1):
            return False
        layers = layers[1:]
    kinds = (nn.Linear, *ACTIVATION_GRADIENTS)
    return (
        bool(layers) and isinstance(layers[-1], nn.Linear) and all(type(m) in kinds for m in layers)
    )


def compute_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The named layers that compute something (the leading ``Flatten`` dropped), in order."""
    return [(name, m) for name, m in module.named_children() if not isinstance(m, nn.Flatten)]


def linear_layers(module: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The named Linear layers, in order."""
    return [(name, m) for name, m in module.named_children() if isinstance(m, nn.Linear)]


def activation_gradient(layer: nn.Module, output: Tensor) -> Tensor:
    """The element-wise derivative of ``layer``'s activation, from its ``output``."""
    return ACTIVATION_GRADIENTS[type(layer)](output)
