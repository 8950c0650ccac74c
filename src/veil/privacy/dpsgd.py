"""DP-SGD (Abadi et al. 2016): clip each sample's gradient, sum, add Gaussian noise, average.

One step releases

    ĝ = (Σ_{i ∈ batch} c_i ∇ℓ_i + N(0, σ²C² I)) / (q·N),   c_i = min(1, C / ‖∇ℓ_i‖),

with the batch drawn by Poisson sampling at rate q from N rows (`veil.privacy.dpsgd_sampling`).
Adding or removing one row changes the clipped sum by at most C in L2, so a step is the
Poisson-subsampled Gaussian mechanism with noise multiplier σ, and T steps are (ε, δ)-DP for
ε = `veil.privacy.accounting.dpsgd_epsilon(σ, q, T, δ)` (add/remove adjacency).

Denominator: the *expected* batch size q·N, a public constant. The realised batch size is a
function of who is in the data (it changes by one when a row is added), so dividing by it would
release it without noise; ĝ is an unbiased estimate of the mean clipped gradient either way.

Threat model: the adversary sees every noisy gradient (so the trained model) and may know every
row but one. The noise and the batch selection come from `veil.randomness.noise_generator`
(OS entropy), never from the user's seed. Floating-point Gaussian noise: not hardened against
Mironov 2012's attacks on float sampling.

Per-sample gradients: `veil.privacy.per_sample` (generic ``torch.func``, vmappable over
clients) and `veil.privacy.dpsgd_bookkeeping` (the fast path). An Opacus-style training loop:
`veil.privacy.dpsgd_api`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from veil.errors import check
from veil.params import Params
from veil.privacy.model_check import check_model
from veil.privacy.per_sample import LossFn, clipped_gradient_sum, per_sample_cross_entropy


def check_dpsgd_arguments(
    noise_multiplier: float, max_grad_norm: float, expected_batch_size: float
) -> None:
    """`ConfigError` unless σ > 0, C > 0 and q·N > 0."""
    check(noise_multiplier > 0, f"noise_multiplier must be > 0 (got {noise_multiplier})")
    check(max_grad_norm > 0, f"max_grad_norm must be > 0 (got {max_grad_norm})")
    check(
        expected_batch_size > 0,
        f"expected_batch_size (sample_rate × rows) must be > 0 (got {expected_batch_size})",
    )


def noisy_average(
    summed: Params,
    noise_multiplier: float,
    max_grad_norm: float,
    expected_batch_size: float,
    generator: torch.Generator,
) -> Params:
    """(Σ_i c_i g_i + N(0, σ²C² I)) / (q·N) for each tensor of a (possibly client-stacked) tree.

    ``generator`` must come from `veil.randomness.noise_generator` on the tensors' device.
    """
    check_dpsgd_arguments(noise_multiplier, max_grad_norm, expected_batch_size)
    std = noise_multiplier * max_grad_norm
    noised = {}
    for name, value in summed.items():
        noise = torch.randn(
            value.shape, generator=generator, device=value.device, dtype=value.dtype
        )
        noised[name] = (value + std * noise) / expected_batch_size
    return noised


def private_gradient(
    module: nn.Module,
    params: Params,
    x: Tensor,
    y: Tensor,
    mask: Tensor,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    expected_batch_size: float,
    generator: torch.Generator,
    loss_fn: LossFn = per_sample_cross_entropy,
) -> tuple[Params, Tensor]:
    """One DP-SGD gradient ĝ of ``params`` on the real rows (``mask`` = 1) of a padded batch.

    The generic path (`per_sample.clipped_gradient_sum`, any vmappable model); returns ĝ and
    the per-sample gradient norms (which are not private: for diagnostics only).
    """
    check_model(module)
    check_dpsgd_arguments(noise_multiplier, max_grad_norm, expected_batch_size)
    summed, norms = clipped_gradient_sum(module, params, x, y, mask, max_grad_norm, loss_fn)
    noised = noisy_average(summed, noise_multiplier, max_grad_norm, expected_batch_size, generator)
    return noised, norms
