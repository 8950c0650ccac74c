"""Per-sample gradient norms and clipped sums of one layer, from its input and output gradient.

For a layer y = f_θ(a) inside a network, sample i's gradient of its own parameters is a function
of the layer's input a_i and the loss gradient at its output g_i = ∂ℓ_i/∂y_i alone. Each rule
here turns (a, g) into, per trainable parameter, the squared norms ‖∂ℓ_i/∂θ‖² and a function
c ↦ Σ_i c_i ∂ℓ_i/∂θ — the book-keeping of Bu et al. 2023 ("Differentially private optimization
on large model at small cost"), with the ghost norms of Li et al. 2022 ("Large language models
can be strong differentially private learners"):

- Linear, W ∈ R^{O×I}: ∂ℓ_i/∂W = Σ_t g_it a_itᵀ. One position: ‖·‖² = ‖g_i‖²‖a_i‖². A sequence of
  T positions: ‖·‖² = ⟨a_i a_iᵀ, g_i g_iᵀ⟩ (T×T Gram matrices) when T² ≤ O·I, else the O×I
  gradients themselves. Clipped sum: one matrix product (c ⊙ g)ᵀ a.
- Conv1d/2d/3d: per-sample weight gradients from ONE grouped convolution backward (the batch
  folded into channels, one group per sample), or for Conv2d with few output positions P
  (P² ≤ O·C·k²) the ghost norm ⟨UᵀU, gᵀg⟩ of the unfolded input U (UᵀU from the pixels' Gram
  matrix when that is cheaper, without forming U). Clipped sum: the convolution
  weight gradient of (a, c ⊙ g), or Σ_i c_i G_i when the per-sample G_i were kept.
- GroupNorm / LayerNorm affine: ∂ℓ_i/∂γ = Σ g_i ⊙ â_i with â the normalised input; ∂ℓ_i/∂β = Σ g_i.
- Embedding: ‖∂ℓ_i/∂E‖² = Σ_{t,t'} [k_it = k_it'] ⟨g_it, g_it'⟩ over the token ids k; clipped sum
  by one ``index_add``.
- Any other layer (and Embedding with ``scale_grad_by_freq``, whose batch counts would mix
  samples): per-sample gradients of its own parameters by ``vmap`` of a ``vjp`` of its
  forward pass (correct for any layer that treats rows independently; slower).

Memory is the per-sample gradients of one layer at a time at most (none for ghost norms); they
are kept for the clipped sum only below `KEEP_LIMIT` elements per layer, else recomputed by one
weighted reduction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap
from torch.nn import functional as F

KEEP_LIMIT = 2**23  # elements (32 MiB of float32) of per-sample gradients kept per layer


class ParameterRule(NamedTuple):
    """One parameter's squared per-sample gradient norms ``[B]`` and c ↦ Σ_i c_i ∂ℓ_i/∂θ."""

    norm_sq: Tensor
    weighted_sum: Callable[[Tensor], Tensor]


Rules = dict[str, ParameterRule]


def kept(per_sample: Tensor) -> ParameterRule:
    """A rule from instantiated per-sample gradients ``[B, *shape]``."""
    norm_sq = torch.linalg.vector_norm(per_sample.flatten(1), dim=1).square()
    return ParameterRule(norm_sq, lambda c: torch.tensordot(c, per_sample, dims=1))


def linear_rules(layer: nn.Linear, a: Tensor, g: Tensor, trainable: set[str]) -> Rules:
    """``a [B, ..., I]``, ``g [B, ..., O]``: ghost norms for W, per-sample sums for b."""
    batch = a.shape[0]
    a = a.reshape(batch, -1, a.shape[-1])
    g = g.reshape(batch, -1, g.shape[-1])
    rules: Rules = {}
    if "weight" in trainable:
        rules["weight"] = _linear_weight_rule(a, g)
    if "bias" in trainable:
        rules["bias"] = kept(g.sum(1))
    return rules


def _linear_weight_rule(a: Tensor, g: Tensor) -> ParameterRule:
    positions, fan_in = a.shape[1:]
    fan_out = g.shape[-1]

    def weighted_sum(c: Tensor) -> Tensor:
        return (g * c[:, None, None]).reshape(-1, fan_out).T @ a.reshape(-1, fan_in)

    if positions == 1:
        norm_sq = g.pow(2).sum((1, 2)) * a.pow(2).sum((1, 2))
    elif positions**2 <= fan_out * fan_in:
        norm_sq = (a @ a.transpose(1, 2) * (g @ g.transpose(1, 2))).sum((1, 2))
    else:
        per_sample = g.transpose(1, 2) @ a
        if per_sample.numel() <= KEEP_LIMIT:
            return kept(per_sample)
        norm_sq = per_sample.flatten(1).pow(2).sum(1)
    return ParameterRule(norm_sq, weighted_sum)


def _conv_geometry(conv: nn.Conv1d | nn.Conv2d | nn.Conv3d, a: Tensor) -> tuple[Tensor, list[int]]:
    """The input as the convolution sees it (padded here if not zero-padded by ``padding``)."""
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        return F.pad(a, conv._reversed_padding_repeated_twice, mode=mode), [0] * (a.dim() - 2)
    return a, list(conv.padding)


def _conv_weight_grad(conv: nn.Module, a: Tensor, g: Tensor, padding: list[int], groups: int):
    """∂/∂W of Σ ⟨g, conv(a)⟩ with ``groups`` groups: the backward's weight gradient alone."""
    out_channels = g.shape[1]
    shape = (out_channels, a.shape[1] // groups, *conv.kernel_size)
    stub = g.new_empty(1).expand(shape)  # only the weight's shape is read
    return torch.ops.aten.convolution_backward(
        g,
        a,
        stub,
        None,
        list(conv.stride),
        padding,
        list(conv.dilation),
        False,
        [0] * (a.dim() - 2),
        groups,
        (False, True, False),
    )[1]


def unfolded_gram(
    padded: Tensor, kernel_size: tuple[int, int], dilation: tuple[int, int], stride: tuple[int, int]
) -> Tensor:
    """UᵀU ``[B, P, P]`` for U = im2col of ``padded [B, C, H, W]``, without forming U.

    From the Gram matrix M of the pixels (over channels): ⟨U_p, U_q⟩ = Σ_δ M[p + δ, q + δ] over
    the kernel offsets δ; B·(HW)²·C multiply-adds instead of B·P²·C·k².
    """
    (kh, kw), (dh, dw), (sh, sw) = kernel_size, dilation, stride
    batch, _, hp, wp = padded.shape
    ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    flat = padded.flatten(2)
    pixels = (flat.transpose(1, 2) @ flat).view(batch, hp, wp, hp, wp)
    gram = torch.zeros(batch, ho, wo, ho, wo, dtype=padded.dtype, device=padded.device)
    for i in range(kh):
        rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
        for j in range(kw):
            cols = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
            gram += pixels[:, rows, cols, rows, cols]
    return gram.view(batch, ho * wo, ho * wo)


def _input_gram(conv: nn.Conv2d, a: Tensor, padding: list[int], positions: int) -> Tensor:
    """UᵀU by `unfolded_gram` or by ``F.unfold``, whichever takes fewer multiply-adds."""
    padded = F.pad(a, (padding[1], padding[1], padding[0], padding[0]))
    if padded[0, 0].numel() ** 2 <= positions**2 * conv.weight[0, 0].numel():
        return unfolded_gram(padded, conv.kernel_size, conv.dilation, conv.stride)
    unfolded = F.unfold(a, conv.kernel_size, conv.dilation, padding, conv.stride)
    return unfolded.transpose(1, 2) @ unfolded


def conv_rules(conv: nn.Conv1d | nn.Conv2d | nn.Conv3d, a: Tensor, g: Tensor, trainable: set[str]):
    """``a [B, C, *in]``, ``g [B, O, *out]``: grouped-conv or ghost norms for W; sums for b."""
    rules: Rules = {}
    if "weight" in trainable:
        rules["weight"] = _conv_weight_rule(conv, a, g)
    if "bias" in trainable:
        rules["bias"] = kept(g.flatten(2).sum(2))
    return rules


def _conv_weight_rule(conv: nn.Module, a: Tensor, g: Tensor) -> ParameterRule:
    a, padding = _conv_geometry(conv, a)
    batch, out_channels = g.shape[:2]
    positions = g[0, 0].numel()
    weight_size = conv.weight[0].numel()

    def weighted_sum(c: Tensor) -> Tensor:
        scaled = g * c.reshape(-1, *[1] * (g.dim() - 1))
        return _conv_weight_grad(conv, a, scaled, padding, conv.groups)

    ghost = isinstance(conv, nn.Conv2d) and conv.groups == 1
    if ghost and positions**2 <= out_channels * weight_size:
        flat_g = g.flatten(2)
        input_gram = _input_gram(conv, a, padding, positions)
        norm_sq = (input_gram * (flat_g.transpose(1, 2) @ flat_g)).sum((1, 2))
        return ParameterRule(norm_sq, weighted_sum)
    folded_a = a.reshape(1, -1, *a.shape[2:])
    folded_g = g.reshape(1, -1, *g.shape[2:])
    per_sample = _conv_weight_grad(conv, folded_a, folded_g, padding, batch * conv.groups)
    per_sample = per_sample.view(batch, *conv.weight.shape)
    if per_sample.numel() <= KEEP_LIMIT:
        return kept(per_sample)
    return ParameterRule(per_sample.flatten(1).pow(2).sum(1), weighted_sum)


def group_norm_rules(norm: nn.GroupNorm, a: Tensor, g: Tensor, trainable: set[str]) -> Rules:
    """``a, g [B, C, *]``: γ_c, β_c gradients summed over the positions of channel c."""
    batch, channels = g.shape[:2]
    flat_g = g.reshape(batch, channels, -1)
    rules: Rules = {}
    if "weight" in trainable:
        normalised = F.group_norm(a, norm.num_groups, eps=norm.eps).reshape_as(flat_g)
        rules["weight"] = kept((flat_g * normalised).sum(2))
    if "bias" in trainable:
        rules["bias"] = kept(flat_g.sum(2))
    return rules


def layer_norm_rules(norm: nn.LayerNorm, a: Tensor, g: Tensor, trainable: set[str]) -> Rules:
    """``a, g [B, *, *normalized_shape]``: γ, β gradients summed over the leading positions."""
    batch, shape = g.shape[0], norm.normalized_shape
    flat_g = g.reshape(batch, -1, *shape)
    rules: Rules = {}
    if "weight" in trainable:
        normalised = F.layer_norm(a, shape, eps=norm.eps).reshape_as(flat_g)
        rules["weight"] = kept((flat_g * normalised).sum(1))
    if "bias" in trainable:
        rules["bias"] = kept(flat_g.sum(1))
    return rules


def embedding_rules(embedding: nn.Embedding, ids: Tensor, g: Tensor, trainable: set[str]):
    """``ids [B, *]`` token ids, ``g [B, *, D]``: ghost norms over equal ids, ``index_add`` sum."""
    if "weight" not in trainable:
        return {}
    batch, dim = ids.shape[0], g.shape[-1]
    ids = ids.reshape(batch, -1)
    g = g.reshape(batch, -1, dim)
    if embedding.padding_idx is not None:
        g = g * (ids != embedding.padding_idx).unsqueeze(-1)
    same = ids.unsqueeze(2) == ids.unsqueeze(1)
    norm_sq = (same * (g @ g.transpose(1, 2))).sum((1, 2))

    def weighted_sum(c: Tensor) -> Tensor:
        rows = (g * c[:, None, None]).reshape(-1, dim)
        return torch.zeros_like(embedding.weight).index_add_(0, ids.reshape(-1), rows)

    return {"weight": ParameterRule(norm_sq, weighted_sum)}


def generic_rules(module: nn.Module, inputs: tuple, g: Tensor, trainable: set[str]) -> Rules:
    """Any layer: ``vmap`` over rows of the ``vjp`` of its forward w.r.t. its own parameters.

    Inputs whose first dimension is the batch are split by row; others are shared.
    """
    params = {n: p.detach() for n, p in module.named_parameters(recurse=False) if n in trainable}
    batch = g.shape[0]
    dims = tuple(
        0 if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == batch else None for v in inputs
    )

    def sample_grads(g_i: Tensor, *inputs_i) -> dict[str, Tensor]:
        args = tuple(v.unsqueeze(0) if d == 0 else v for v, d in zip(inputs_i, dims, strict=True))
        _, pullback = vjp(lambda p: functional_call(module, p, args), params)
        return pullback(g_i.unsqueeze(0))[0]

    grads = vmap(sample_grads, in_dims=(0, *dims))(g, *inputs)
    return {name: kept(grads[name]) for name in params}


LayerRule = Callable[[nn.Module, Tensor, Tensor, set[str]], Rules]
RULES: dict[type[nn.Module], LayerRule] = {
    nn.Linear: linear_rules,
    nn.Conv1d: conv_rules,
    nn.Conv2d: conv_rules,
    nn.Conv3d: conv_rules,
    nn.GroupNorm: group_norm_rules,
    nn.LayerNorm: layer_norm_rules,
    nn.Embedding: embedding_rules,
}


def layer_rules(module: nn.Module, inputs: tuple, g: Tensor, trainable: set[str]) -> Rules:
    """The rules for ``module``'s ``trainable`` direct parameters, by exact layer type.

    Subclasses (which may override ``forward``) and unsupported settings take `generic_rules`.
    """
    rule = RULES.get(type(module))
    batch_frequencies = getattr(module, "scale_grad_by_freq", False)  # Embedding's batch counts
    if rule is None or len(inputs) != 1 or batch_frequencies:
        return generic_rules(module, inputs, g, trainable)
    return rule(module, inputs[0], g, trainable)
