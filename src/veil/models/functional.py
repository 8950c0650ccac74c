"""The functional view of a model: parameters as ``dict[str, Tensor]`` passed in at call time.

``FunctionalModel(module).apply(params, x)`` is ``torch.func.functional_call(module, params, x)``,
so the same module can run many clients' parameters under ``torch.func.vmap``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from veil.params import Params


@dataclass(frozen=True)
class FunctionalModel:
    """A stateless wrapper: ``apply(params, x)`` runs ``module`` with the given parameters."""

    module: nn.Module

    def init_params(self) -> Params:
        """Detached copies of the module's current parameters (its initialisation)."""
        return {k: v.detach().clone() for k, v in self.module.named_parameters()}

    def apply(self, params: Params, x: Tensor) -> Tensor:
        """Forward pass with ``params`` in place of the module's own parameters."""
        return functional_call(self.module, params, (x,))


def cross_entropy_and_accuracy(
    model: FunctionalModel, params: Params, x: Tensor, y: Tensor, batch_size: int = 4096
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``params`` on ``(x, y)``, evaluated in batches."""
    if len(y) == 0:
        return float("nan"), float("nan")
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            logits = model.apply(params, x[start : start + batch_size])
            target = y[start : start + batch_size]
            total_loss += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
            correct += int((logits.argmax(1) == target).sum())
    return total_loss / len(y), correct / len(y)
