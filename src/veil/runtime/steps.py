"""What every batched engine computes in a local SGD step, for ``C`` clients at once.

Each client's loss in a step is the mean cross-entropy over its *real* batch slots (mask 1); a
step with no real slot is inactive and changes nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def step_weights(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Masked-mean weights ``[C, B]`` (1/count on real slots) and the active flags ``[C]``."""
    count = mask.sum(1)
    return mask / count.clamp_min(1.0).unsqueeze(1), (count > 0).to(mask.dtype)


def cross_entropy_gradient(
    logits: Tensor, target: Tensor, weights: Tensor
) -> tuple[Tensor, Tensor]:
    """Weighted cross-entropy per client ``[C]`` and its gradient at the logits ``[C, B, K]``:
    ``∂/∂z Σ_b w_b CE(z_b, y_b) = w_b (softmax(z_b) - onehot(y_b))``."""
    log_probs = F.log_softmax(logits, dim=2)
    target = target.unsqueeze(2)
    loss = -(log_probs.gather(2, target).squeeze(2) * weights).sum(1)
    delta = log_probs.exp_().scatter_add_(2, target, torch.full_like(log_probs[..., :1], -1.0))
    return loss, delta.mul_(weights.unsqueeze(2))


def mean_over_active_steps(loss_sum: Tensor, mask: Tensor) -> Tensor:
    """Each client's summed step losses divided by its number of active steps ``[C]``."""
    return loss_sum / (mask.sum(2) > 0).sum(1).clamp_min(1)
