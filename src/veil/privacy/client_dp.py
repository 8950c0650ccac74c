"""Client-level differential privacy for federated averaging (DP-FedAvg).

McMahan, Ramage, Talwar, Zhang 2018 ("Learning Differentially Private Recurrent Language
Models"): each client's whole update is clipped to L2 norm C, the server adds N(0, σ²C²) to the
*sum* of the clipped updates and divides by a fixed, public denominator (the expected number of
clients per round), so adding or removing one client changes the released sum by at most C.
With client sampling rate q, each round is a Poisson-subsampled Gaussian mechanism.

Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021, "Differentially Private Learning
with Adaptive Clipping"): C follows a target quantile γ of the update norms,
C ← C·exp(-η (b̄ - γ)), where b̄ is the noised fraction of clients whose norm was ≤ C.

Threat model: the server (and anyone who sees the models) learns the noised aggregate only
after noise is added; it still sees each client's clipped update in the clear unless secure
aggregation or HE is also used. The guarantee is about the released models.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import dp_accounting
import torch

from veil.errors import ProtocolError, check
from veil.fl.links import ClientUpdates, Link
from veil.params import Params, flatten, leading_axis_l2_norms, tree_map, unflatten
from veil.privacy.mechanisms import gaussian_mechanism

SamplingEvent = Callable[[dp_accounting.DpEvent], dp_accounting.DpEvent]
NORM_SLACK = 1e-4  # float rounding allowed when checking that updates were clipped


def poisson_sampling(rate: float) -> SamplingEvent:
    """The event of a mechanism run on a Poisson sample of clients (rate 1: everyone)."""
    check(0 < rate <= 1, f"client sampling rate must be in (0, 1] (got {rate})")
    if rate == 1:
        return lambda event: event
    return lambda event: dp_accounting.PoissonSampledDpEvent(rate, event)


def clip_l2(clip_norm: float) -> Link:
    """Encoder link: scale each client's update to L2 norm at most C (over all parameters)."""
    check(
        math.isfinite(clip_norm) and clip_norm > 0,
        f"privacy.clip_norm must be > 0 (got {clip_norm})",
    )

    def apply(updates: ClientUpdates, state: None, key: torch.Generator):
        return _clipped(updates, clip_norm), state, []

    return Link(lambda params: None, apply)


def gaussian_sum(
    noise_multiplier: float,
    clip_norm: float,
    denominator: float,
    sampling: SamplingEvent,
    noise_decay: float = 1.0,
) -> Link:
    """Aggregator link: (Σ_c Δ_c + N(0, σ_t²C² I)) / denominator, for updates clipped to C,
    with σ_t = σ · decay^(t-1) in round t (the state counts rounds).

    Refuses updates whose norm exceeds C (noise calibrated to C would not cover them): put
    `clip_l2` in the encoder chain.
    """
    _check_noise(noise_multiplier, denominator, noise_decay)

    def apply(updates: ClientUpdates, rounds_done: int, key: torch.Generator):
        norms = leading_axis_l2_norms(updates.deltas)
        if updates.num_clients and float(norms.max()) > clip_norm * (1 + NORM_SLACK):
            raise ProtocolError(
                f"an update has norm {float(norms.max()):.4g} > clip norm {clip_norm:g}: the noise "
                "would not cover it; clip updates in the encoder chain (clip_l2) first"
            )
        sigma = noise_multiplier * noise_decay**rounds_done
        updates = _clipped(updates, clip_norm)  # removes the float slack the check allowed
        noisy, event = _noisy_mean(updates.deltas, clip_norm, sigma, denominator, key)
        return noisy, rounds_done + 1, [sampling(event)]

    return Link(lambda params: 0, apply)


def adaptive_clipped_gaussian_sum(
    noise_multiplier: float,
    initial_clip_norm: float,
    target_quantile: float,
    learning_rate: float,
    denominator: float,
    sampling: SamplingEvent,
    bit_noise_multiplier: float | None = None,
    noise_decay: float = 1.0,
) -> Link:
    """Aggregator link: clip to the current C, release the noised mean and the noised count of
    clients under C, then move C toward the ``target_quantile`` of update norms.

    The two releases together are one Gaussian mechanism with noise multiplier σ when the update
    noise is σ_Δ = (σ⁻² − (2σ_b)⁻²)^(-1/2) (Andrew et al. 2021, centred bits b − ½). σ_b defaults
    to max(denominator / 20, σ), the paper's choice where it is feasible. With ``noise_decay``,
    every noise scale shrinks by that factor each round. The clipping runs where the updates
    are (in simulation, on the stacked batch); the state is (current C, rounds done).
    """
    _check_noise(noise_multiplier, denominator, noise_decay)
    check(initial_clip_norm > 0, f"privacy.clip_norm must be > 0 (got {initial_clip_norm})")
    check(
        0 < target_quantile < 1,
        f"privacy.target_quantile must be in (0, 1) (got {target_quantile})",
    )
    check(learning_rate > 0, f"privacy.clip_learning_rate must be > 0 (got {learning_rate})")
    bit_sigma = (
        bit_noise_multiplier
        if bit_noise_multiplier is not None
        else max(denominator / 20, noise_multiplier)
    )
    check(
        2 * bit_sigma > noise_multiplier,
        f"privacy.bit_noise_multiplier must be > σ/2 = {noise_multiplier / 2:g} (got {bit_sigma})",
    )
    update_sigma = (noise_multiplier**-2 - (2 * bit_sigma) ** -2) ** -0.5

    def apply(updates: ClientUpdates, state: tuple[float, int], key: torch.Generator):
        clip_norm, rounds_done = state
        scale = noise_decay**rounds_done
        below = (leading_axis_l2_norms(updates.deltas) <= clip_norm).to(torch.float32)
        clipped = _clipped(updates, clip_norm).deltas
        noisy, _ = _noisy_mean(clipped, clip_norm, update_sigma * scale, denominator, key)
        centred = (below - 0.5).sum().reshape(1).to(key.device)
        noisy_bits, _ = gaussian_mechanism(centred, 1.0, bit_sigma * scale, key)
        fraction = float(noisy_bits) / denominator + 0.5
        new_clip = clip_norm * math.exp(-learning_rate * (fraction - target_quantile))
        event = dp_accounting.GaussianDpEvent(noise_multiplier * scale)
        return noisy, (new_clip, rounds_done + 1), [sampling(event)]

    return Link(lambda params: (float(initial_clip_norm), 0), apply)


def _clipped(updates: ClientUpdates, clip_norm: float) -> ClientUpdates:
    scale = (clip_norm / leading_axis_l2_norms(updates.deltas).clamp_min(1e-12)).clamp_max(1.0)
    deltas = {k: v * scale.reshape(-1, *([1] * (v.dim() - 1))) for k, v in updates.deltas.items()}
    return ClientUpdates(deltas, updates.weights, updates.client_ids)


def _noisy_mean(
    deltas: Params,
    clip_norm: float,
    noise_multiplier: float,
    denominator: float,
    key: torch.Generator,
) -> tuple[Params, dp_accounting.DpEvent]:
    total = {k: v.sum(0) for k, v in deltas.items()}
    noisy, event = gaussian_mechanism(
        flatten(total).to(key.device), clip_norm, noise_multiplier, key
    )
    device = next(iter(total.values())).device
    return tree_map(lambda x: x / denominator, unflatten(noisy.to(device), total)), event


def _check_noise(noise_multiplier: float, denominator: float, noise_decay: float) -> None:
    check(0 < noise_decay <= 1, f"privacy.noise_decay must be in (0, 1] (got {noise_decay})")
    check(
        math.isfinite(noise_multiplier) and noise_multiplier > 0,
        f"privacy.noise_multiplier must be > 0 (got {noise_multiplier})",
    )
    check(
        denominator > 0,
        f"the mean's denominator (expected clients per round) must be > 0 (got {denominator})",
    )
