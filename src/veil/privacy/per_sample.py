"""Per-sample gradients of any ``nn.Module`` with ``torch.func``, and their clipped sum.

For a batch ``(x_i, y_i)`` and parameters θ, ``vmap(grad(ℓ))`` gives every
g_i = ∇_θ ℓ(f_θ(x_i), y_i) in one call, without changing the model (Abadi et al. 2016's DP-SGD
needs each g_i to bound each sample's influence). Clipping scales g_i by
c_i = min(1, C / (‖g_i‖₂ + 10⁻⁶)), so ‖c_i g_i‖₂ < C (up to float rounding of the norm, ~10⁻⁷
relative in float32), and the clipped sum is Σ_i m_i c_i g_i with m_i ∈ {0, 1} marking the real
rows of a batch padded to a fixed capacity.

Everything here is a pure function of tensors, so it runs under an outer ``torch.func.vmap``
(e.g. over clients, for sample-level DP inside federated clients; ``max_grad_norm`` is a Python
number, and the model should pass `veil.privacy.model_check.check_model` once beforehand). It
instantiates all B per-sample gradients at once (memory B × parameters);
`veil.privacy.dpsgd_bookkeeping` is the fast path that does not.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from veil.errors import check
from veil.params import Params, leading_axis_l2_norms

LossFn = Callable[[Tensor, Tensor], Tensor]  # (output [B, ...], target [B, ...]) -> losses [B]
per_sample_cross_entropy: LossFn = partial(F.cross_entropy, reduction="none")
CLIP_EPSILON = 1e-6  # keeps the clip factor finite at g_i = 0 (as Opacus and optax do)


def per_sample_gradients(
    module: nn.Module,
    params: Params,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn = per_sample_cross_entropy,
) -> Params:
    """Every sample's gradient ∇_θ ℓ(f_θ(x_i), y_i), stacked: ``{name: [B, *shape]}``.

    ``loss_fn(output, target)`` returns one loss per row (``reduction="none"``); ``module``'s
    forward must treat rows independently (no BatchNorm: see `veil.privacy.model_check`).
    """

    def sample_loss(p: Params, x_i: Tensor, y_i: Tensor) -> Tensor:
        output = functional_call(module, p, (x_i.unsqueeze(0),))
        return loss_fn(output, y_i.unsqueeze(0)).sum()

    return vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, x, y)


def clip_factors(norms: Tensor, max_grad_norm: float) -> Tensor:
    """c_i = min(1, C / (‖g_i‖ + 10⁻⁶)): scaling g_i by c_i leaves ‖c_i g_i‖ < C."""
    check(max_grad_norm > 0, f"max_grad_norm must be > 0 (got {max_grad_norm})")
    return (max_grad_norm / (norms + CLIP_EPSILON)).clamp(max=1.0)


def clipped_gradient_sum(
    module: nn.Module,
    params: Params,
    x: Tensor,
    y: Tensor,
    mask: Tensor,
    max_grad_norm: float,
    loss_fn: LossFn = per_sample_cross_entropy,
) -> tuple[Params, Tensor]:
    """Σ_i m_i c_i g_i and the per-sample norms ‖g_i‖ (0 on padding rows, where m_i = 0).

    ``x [B, ...]``, ``y [B, ...]``, ``mask [B]`` (1 for a real row, 0 for padding). Padding rows
    contribute nothing, whatever they hold. Pure: vmappable over a leading clients axis.
    """
    grads = per_sample_gradients(module, params, x, y, loss_fn)
    norms = leading_axis_l2_norms(grads) * mask
    factors = clip_factors(norms, max_grad_norm) * mask
    summed = {k: torch.tensordot(factors.to(g.dtype), g, dims=1) for k, g in grads.items()}
    return summed, norms
