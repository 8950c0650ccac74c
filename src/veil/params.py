"""Parameters as plain dictionaries of tensors, and the few tree operations veil needs.

A model's parameters are ``Params = dict[str, Tensor]``; a batch of clients stacks them on a
leading axis, so ``stacked["0.weight"][c]`` is client ``c``'s weight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Params = dict[str, Tensor]


def tree_map(fn: Callable[..., Tensor], tree: Params, *rest: Params) -> Params:
    """Apply ``fn`` leaf-wise to one or more trees with the same keys."""
    return {k: fn(v, *(r[k] for r in rest)) for k, v in tree.items()}


def stack(trees: Sequence[Params]) -> Params:
    """Stack per-client trees on a new leading axis."""
    return {k: torch.stack([t[k] for t in trees]) for k in trees[0]}


def broadcast(tree: Params, n: int) -> Params:
    """``n`` independent (contiguous) copies of ``tree`` stacked on a leading axis."""
    return {k: v.unsqueeze(0).expand(n, *v.shape).clone() for k, v in tree.items()}


def weighted_sum(stacked: Params, weights: Tensor) -> Params:
    """Σ_c w_c · x_c over the leading axis (``weights`` has shape ``[C]``)."""
    return {k: torch.tensordot(weights.to(v.dtype), v, dims=1) for k, v in stacked.items()}


def leading_axis_l2_norms(stacked: Params) -> Tensor:
    """The L2 norm of each slice along the leading axis, jointly over all leaves: shape ``[C]``
    (each client's update norm, or each sample's gradient norm)."""
    squares = [
        (v.flatten(1) if v.dim() > 1 else v[:, None]).pow(2).sum(1) for v in stacked.values()
    ]
    return torch.stack(squares).sum(0).sqrt()


def flatten(tree: Params) -> Tensor:
    """All leaves of an unstacked tree as one vector, in key order."""
    return torch.cat([v.reshape(-1) for v in tree.values()])


def flatten_stacked(stacked: Params) -> Tensor:
    """A stacked tree (leading client axis) as one row per client, leaves in key order."""
    n = next(iter(stacked.values())).shape[0]
    return torch.cat([v.reshape(n, v.shape[1:].numel()) for v in stacked.values()], dim=1)


def unflatten(vector: Tensor, like: Params) -> Params:
    """Inverse of `flatten` for a tree shaped like ``like``."""
    out, start = {}, 0
    for k, v in like.items():
        out[k] = vector[start : start + v.numel()].view_as(v)
        start += v.numel()
    return out
