"""Sample-level DP inside federated clients: every client trains by DP-SGD, all at once.

Each local step of client c draws a Poisson sample of its n_c rows at rate q_c = min(1, B/n_c)
(B the configured batch size), clips every sample's gradient to L2 norm C, adds N(0, σ²C² I) to
the sum and divides by B (Abadi et al. 2016; see `veil.privacy.dpsgd`). The divisor is the
public constant B, not q_c·n_c: for a client with n_c ≤ B rows (q_c = 1) that would be n_c, and
one more row would rescale every other row's contribution, a change that add/remove adjacency
does not cover (the canary audit measured ε ≥ 5.8 against a claimed 4.4 before this was fixed).
As in Opacus and TF Privacy, the record count n_c (which sets q_c and, in epoch mode, the step
count) is treated as public. The clients of a chunk run in lock-step under ``torch.func.vmap`` over
`veil.privacy.per_sample.clipped_gradient_sum`; a client with fewer steps (epoch mode) sits out
the extra ones, unchanged and unaccounted.

Threat model: the noise is added *on the client*, so each client's update is itself (ε, δ)-DP
with respect to any one of its records: the server, the other clients and everyone who sees the
models learn only that. Per round, client c's local training is the event
``SelfComposed(PoissonSampled(q_c, Gaussian(σ)), steps_c)``, recorded under that client's name.
Poisson sampling and noise come from the round's noise generator (OS entropy), never the seed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from veil.fl.local import LocalTraining
from veil.params import Params, broadcast
from veil.privacy.accounting import dpsgd_event
from veil.privacy.dpsgd import noisy_average
from veil.privacy.ledger import SubjectEvent
from veil.privacy.per_sample import clipped_gradient_sum
from veil.runtime.pool import ClientPool


def client_sample_rates(sizes: np.ndarray, batch_size: int) -> np.ndarray:
    """q_c = min(1, B / n_c): each row's chance to be in a step's batch."""
    return np.minimum(1.0, batch_size / np.asarray(sizes, dtype=np.float64))


def client_dpsgd_events(
    client_ids: np.ndarray, sizes: np.ndarray, plan: LocalTraining, names: list[str]
) -> list[SubjectEvent]:
    """Each client's privacy cost of one round of local DP-SGD, attributed to that client."""
    rates = client_sample_rates(sizes, plan.batch_size)
    sigma = plan.dp.noise_multiplier
    return [
        SubjectEvent(names[c], dpsgd_event(sigma, float(q), int(plan.num_steps(int(n)))))
        for c, n, q in zip(client_ids, sizes, rates, strict=True)
    ]


def train_dpsgd_clients(
    module: nn.Module,
    global_params: Params,
    pool: ClientPool,
    client_ids: np.ndarray,
    plan: LocalTraining,
    generator: torch.Generator,
) -> tuple[Params, Tensor]:
    """Local DP-SGD of ``client_ids`` from ``global_params``: stacked deltas and mean losses."""
    device = pool.x.device
    sizes = pool.sizes[client_ids]
    widest = int(sizes.max())
    columns = torch.arange(widest, device=device)
    sizes_t = torch.as_tensor(sizes, device=device)
    valid = columns < sizes_t[:, None]  # [C, n_max]
    offsets = torch.as_tensor(pool.offsets[client_ids], device=device)
    rows = torch.where(valid, offsets[:, None] + columns, 0)
    x, y = pool.x[rows], pool.y[rows]  # [C, n_max, ...]
    rates = torch.as_tensor(  # float64: the sampled rate must be the q the events record
        client_sample_rates(sizes, plan.batch_size), dtype=torch.float64, device=device
    )
    divisor = float(plan.batch_size)  # public; see the module docstring
    steps = torch.as_tensor([int(plan.num_steps(int(n))) for n in sizes], device=device)
    clip, sigma = plan.dp.max_grad_norm, plan.dp.noise_multiplier

    def clipped_sum(p: Params, xc: Tensor, yc: Tensor, mc: Tensor):
        return clipped_gradient_sum(module, p, xc, yc, mc, clip)[0]

    def losses(p: Params, xc: Tensor, yc: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(module, p, (xc,)), yc, reduction="none")

    params = broadcast(global_params, len(client_ids))
    loss_sum = torch.zeros(len(client_ids), device=device)
    for s in range(int(steps.max())):
        active = (steps > s).to(torch.float32)
        uniform = torch.rand(valid.shape, generator=generator, device=device, dtype=torch.float64)
        sampled = ((uniform < rates[:, None]) & valid).to(torch.float32)
        grads = vmap(clipped_sum)(params, x, y, sampled)
        with torch.no_grad():
            per_row = vmap(losses)(params, x, y)
            loss_sum += active * (per_row * sampled).sum(1) / sampled.sum(1).clamp_min(1)
        noised = noisy_average(grads, sigma, clip, 1.0, generator)  # Σ c_i g_i + N(0, σ²C²)
        for k, g in noised.items():
            step = g / divisor
            if plan.prox_mu > 0:
                step = step + plan.prox_mu * (params[k] - global_params[k])
            params[k] = params[k] - plan.lr * active.reshape(-1, *([1] * (g.dim() - 1))) * step
    deltas = {k: params[k] - global_params[k] for k in params}
    return deltas, loss_sum / steps.clamp_min(1)
