"""The generic vectorized engine: many clients' local SGD at once with ``torch.func``.

Per step, ``vmap(grad(loss))`` over stacked parameters ``[C, ...]`` and gathered batches
``[C, B, ...]`` gives every client's gradient in one call, for any ``nn.Module`` whose forward
pass is vmappable (no in-place batch statistics). Clients of unequal size carry a 0/1 mask: the
loss is the mean over real rows, and a step with no real row changes nothing (the FedProx term
is gated off too).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap
from torch.nn import functional as F

from veil.fl.local import LocalTraining
from veil.params import Params, broadcast
from veil.runtime.pool import TrainingChunk
from veil.runtime.steps import mean_over_active_steps


def train_vectorized(
    module: nn.Module,
    global_params: Params,
    chunk: TrainingChunk,
    plan: LocalTraining,
) -> tuple[Params, Tensor]:
    """Engine interface: local SGD of the clients in ``index [C, S, B]``; deltas and losses."""
    x, y, index, mask = chunk.x, chunk.y, chunk.index, chunk.mask
    mu = plan.prox_mu

    def objective(params: Params, xb: Tensor, yb: Tensor, mb: Tensor):
        losses = F.cross_entropy(functional_call(module, params, (xb,)), yb, reduction="none")
        count = mb.sum()
        loss = (losses * mb).sum() / count.clamp_min(1.0)
        total = loss
        if mu > 0:
            prox = sum((params[k] - global_params[k]).pow(2).sum() for k in params)
            total = loss + (count > 0).to(loss.dtype) * (mu / 2) * prox
        return total, loss

    step = vmap(grad_and_value(objective, has_aux=True))
    params = broadcast(global_params, index.shape[0])
    names = list(params)
    loss_sum = torch.zeros(index.shape[0], device=x.device)
    for s in range(index.shape[1]):
        rows = index[:, s]
        grads, (_, loss) = step(params, x[rows], y[rows], mask[:, s])
        for k in names:
            params[k].sub_(grads[k], alpha=plan.lr)
        loss_sum += loss
    deltas = {k: params[k] - global_params[k] for k in names}
    return deltas, mean_over_active_steps(loss_sum, mask)
