"""The reference engine: a plain per-client loop with ``torch.optim.SGD``.

This is what a user would write by hand, and what the vectorized engines are tested against.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from veil.fl.local import LocalTraining
from veil.params import Params, stack
from veil.runtime.pool import TrainingChunk


def train_one_client(
    module: nn.Module,
    global_params: Params,
    x: Tensor,
    y: Tensor,
    index: Tensor,
    mask: Tensor,
    plan: LocalTraining,
) -> tuple[Params, float]:
    """Run one client's local SGD on rows ``x[index[s]]`` (where ``mask``) for each step ``s``.

    Returns the client's final parameters and its mean training loss over the steps it took.
    """
    local = copy.deepcopy(module)
    with torch.no_grad():
        for name, parameter in local.named_parameters():
            parameter.copy_(global_params[name])
    optimizer = torch.optim.SGD(local.parameters(), lr=plan.lr)
    anchors = {k: v.detach() for k, v in global_params.items()}
    losses = []
    for step_index, step_mask in zip(index, mask.bool(), strict=True):
        if not step_mask.any():
            continue
        rows = step_index[step_mask]
        loss = F.cross_entropy(local(x[rows]), y[rows])
        objective = loss
        if plan.prox_mu > 0:
            prox = sum((p - anchors[k]).pow(2).sum() for k, p in local.named_parameters())
            objective = loss + plan.prox_mu / 2 * prox
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        losses.append(loss.item())
    params = {k: v.detach().clone() for k, v in local.named_parameters()}
    return params, sum(losses) / max(len(losses), 1)


def train_sequential(
    module: nn.Module, global_params: Params, chunk: TrainingChunk, plan: LocalTraining
) -> tuple[Params, Tensor]:
    """Engine interface: train each client of the chunk in turn; stacked deltas and losses."""
    deltas, losses = [], []
    for client_index, client_mask in zip(chunk.index, chunk.mask, strict=True):
        params, loss = train_one_client(
            module, global_params, chunk.x, chunk.y, client_index, client_mask, plan
        )
        deltas.append({k: params[k] - global_params[k] for k in global_params})
        losses.append(loss)
    return stack(deltas), torch.tensor(losses, device=chunk.x.device)
