"""The low-rank engine: local SGD of many clients without per-client weight copies.

After ``s`` SGD steps a client's Linear weight is the shared global weight plus a low-rank term,

    W_s = W_0 + D_s,   D_s = Σ_{t<s} κ_{s,t} δ_tᵀ a_t,   κ_{s,t} = -η Π_{t<u<s} (1 - ημ·1[u active])

(a_t the layer input and δ_t the loss gradient at its output in step t, η the learning rate and
μ the FedProx weight). So the forward pass ``a_s W_sᵀ = a_s W_0ᵀ + (a_s U_sᵀ) V_s`` is one GEMM
with the *shared* ``W_0`` over all clients' rows plus a small correction through the factors
``U = [a_t]`` and ``V = [κ δ_t]`` (``B × sB`` Gram blocks per client); the backward pass
likewise. The first layer's inputs are known before training, so its products with ``W_0`` and its
Gram matrix ``U Uᵀ`` are computed once for all steps. Per-client weights are formed once, at the
end: ``D_S = V_Sᵀ U_S``. For a few short steps (``S·B`` well below ``in·out / (in+out)``) this does
the arithmetic of dense per-client training in large, cache-friendly products and never streams
per-client weights through memory each step. Trains Linear stacks (`veil.runtime.linear_stack`);
results equal the other engines to float rounding (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from veil.fl.local import LocalTraining
from veil.params import Params
from veil.runtime.linear_stack import activation_gradient, compute_layers, linear_layers
from veil.runtime.pool import TrainingChunk
from veil.runtime.steps import cross_entropy_gradient, mean_over_active_steps, step_weights

# Cost, in multiply-adds, of streaming one per-client weight through memory once per step (read
# and write) in the dense engines; a loose calibration on 2-core CPUs with ~5 GB/s of copy speed.
WEIGHT_TRAFFIC_COST = 8


def dense_to_lowrank_cost(module: nn.Module, steps: int, batch_size: int) -> float:
    """Estimated cost of the low-rank engine relative to dense per-client training (< 1: cheaper).

    Both do ``2·in·out`` multiply-adds per row. Dense training also streams every per-client
    weight through memory each step (``WEIGHT_TRAFFIC_COST·in·out`` per step); the low-rank engine
    instead pays Gram corrections growing with the rows seen, ``(S·B)²·(in+out)/2`` per client.
    """
    rows = steps * batch_size
    layers = [layer for _, layer in linear_layers(module)]
    shared = sum(2 * rows * m.in_features * m.out_features for m in layers)
    dense = shared + sum(
        WEIGHT_TRAFFIC_COST * steps * m.in_features * m.out_features for m in layers
    )
    lowrank = shared + sum(rows * rows * (m.in_features + m.out_features) / 2 for m in layers)
    return lowrank / dense


@dataclass
class _LowRankLinear:
    """One Linear layer of C clients: shared weight ``W_0`` plus factors ``U``, ``V`` (and bias)."""

    weight: Tensor  # W_0 [out, in], shared
    inputs: Tensor  # U [C, S·B, in]
    grads: Tensor  # V [C, S·B, out], κ-scaled
    bias: Tensor | None  # [C, out], per client
    global_bias: Tensor | None  # b_0 [out], FedProx's anchor
    products: Tensor | None = None  # U W_0ᵀ for all steps (first layer only)
    gram: Tensor | None = None  # U Uᵀ [C, S·B, S·B] (first layer only)

    def forward(self, a: Tensor, now: slice, seen: slice) -> Tensor:
        """Layer output for step inputs ``a [C, B, in]``, stored as rows ``now`` of ``U``."""
        if self.products is not None:
            z = self.products[:, now].clone()
            if seen.stop > 0:
                z.baddbmm_(self.gram[:, now, seen], self.grads[:, seen])
        else:
            self.inputs[:, now] = a
            z = _shared_product(a, self.weight.t())
            if seen.stop > 0:
                z.baddbmm_(torch.bmm(a, self.inputs[:, seen].transpose(1, 2)), self.grads[:, seen])
        if self.bias is not None:
            z += self.bias.unsqueeze(1)
        return z

    def input_gradient(self, delta: Tensor, seen: slice) -> Tensor:
        """``δ W_s``: the loss gradient at this layer's input, ``[C, B, in]``."""
        upstream = _shared_product(delta, self.weight)
        if seen.stop > 0:
            upstream.baddbmm_(
                torch.bmm(delta, self.grads[:, seen].transpose(1, 2)), self.inputs[:, seen]
            )
        return upstream

    def sgd_step(
        self, delta: Tensor, now: slice, seen: slice, lr: float, mu: float, active: Tensor
    ) -> None:
        """Record ``-η δ`` as rows ``now`` of ``V``, decay older rows by FedProx's ``1 - ημ``, and
        step the bias: ``b ← b - η (Σ_rows δ + μ·1[active]·(b - b_0))``."""
        if mu > 0 and seen.stop > 0:
            self.grads[:, seen] *= (1 - lr * mu * active).reshape(-1, 1, 1)
        torch.mul(delta, -lr, out=self.grads[:, now])
        if self.bias is not None:
            pull = mu * active.unsqueeze(1) * (self.bias - self.global_bias) if mu > 0 else 0.0
            self.bias -= lr * (delta.sum(1) + pull)


def train_lowrank(
    module: nn.Module,
    global_params: Params,
    chunk: TrainingChunk,
    plan: LocalTraining,
) -> tuple[Params, Tensor]:
    """Engine interface: local SGD of the clients in ``index [C, S, B]``; deltas and losses."""
    x, y, index, mask = chunk.x, chunk.y, chunk.index, chunk.mask
    clients, steps, batch = index.shape
    lr, mu = plan.lr, plan.prox_mu
    layers = compute_layers(module)
    factors = {
        name: _factors(name, m, global_params, clients, steps * batch, x)
        for name, m in layers
        if isinstance(m, nn.Linear)
    }
    first = factors.get(layers[0][0])
    if first is not None:  # its inputs do not depend on the weights: all steps at once
        torch.index_select(x, 0, index.reshape(-1), out=first.inputs.view(-1, *x.shape[1:]))
        first.products = _shared_product(first.inputs, first.weight.t())
        first.gram = torch.bmm(first.inputs, first.inputs.transpose(1, 2))
    loss_sum = x.new_zeros(clients)
    for s in range(steps):
        rows = index[:, s]
        weights, active = step_weights(mask[:, s])
        seen, now = slice(0, s * batch), slice(s * batch, (s + 1) * batch)
        a = first.inputs[:, now] if first is not None else x[rows].reshape(clients, batch, -1)
        outputs = []
        for name, layer in layers:
            a = factors[name].forward(a, now, seen) if name in factors else layer(a)
            outputs.append(a)
        loss, delta = cross_entropy_gradient(a, y[rows], weights)
        loss_sum += loss
        for position in range(len(layers) - 1, -1, -1):
            name, layer = layers[position]
            if name not in factors:
                delta = delta * activation_gradient(layer, outputs[position])
                continue
            linear = factors[name]
            upstream = linear.input_gradient(delta, seen) if position > 0 else None
            linear.sgd_step(delta, now, seen, lr, mu, active)
            delta = upstream
    deltas: Params = {}
    for name, linear in factors.items():
        deltas[f"{name}.weight"] = torch.bmm(linear.grads.transpose(1, 2), linear.inputs)
        if linear.bias is not None:
            deltas[f"{name}.bias"] = linear.bias - global_params[f"{name}.bias"]
    return {k: deltas[k] for k in global_params}, mean_over_active_steps(loss_sum, mask)


def _factors(
    name: str, layer: nn.Linear, params: Params, clients: int, rows: int, x: Tensor
) -> _LowRankLinear:
    bias = params.get(f"{name}.bias")
    return _LowRankLinear(
        weight=params[f"{name}.weight"],
        inputs=x.new_empty(clients, rows, layer.in_features),
        grads=x.new_zeros(clients, rows, layer.out_features),
        bias=None if bias is None else bias.expand(clients, -1).clone(),
        global_bias=bias,
    )


def _shared_product(a: Tensor, weight: Tensor) -> Tensor:
    """``a [C, B, i] @ weight [i, o]`` as one GEMM over all clients' rows: ``[C, B, o]``."""
    clients, batch, width = a.shape
    return (a.reshape(clients * batch, width) @ weight).view(clients, batch, -1)
