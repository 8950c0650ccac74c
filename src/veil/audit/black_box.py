"""Black-box canary audit of DP-SGD with an input-space canary (Jagielski, Ullman, Oprea 2020;
Nasr, Song, Thakurta, Papernot, Carlini 2021).

The canary is a *record*: an out-of-distribution input (every scaled feature at
``CANARY_FEATURE`` standard deviations) carrying the label the initial model finds least
likely. Half of many runs train with it, half without; the auditor sees only each run's final
model and scores it by −loss on the canary (higher means "in"). Unlike the white-box gradient
canary of `veil.audit.canary`, the canary's clipped gradient changes direction as the model
trains, mixes with the other records' gradients, and the intermediate steps stay hidden, so
the bound is far looser: it shows how much of the claim a realistic attacker confirms.

Each run is the audited client training alone (a one-client federation: FedAvg leaves its model
as is) for all its DP-SGD steps, ``rounds × steps per round``, with veil's own trainer
`veil.runtime.dpsgd_local.train_dpsgd_clients` (Poisson batches, per-sample clipping, noise):
runs are its "clients", so one call trains a whole chunk of runs. FedProx is off (no other
client to stay close to). The runs with the canary have n + 1 records, so veil's trainer samples
them at q = B/(n + 1) and those without at B/n: the audit sees what the record count leaks
(docs/privacy-audit.md, limitations).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch.func import vmap
from torch.nn import functional as F

from veil.audit.result import AuditResult, check_num_runs, ledger_epsilon
from veil.experiment import Experiment
from veil.params import Params, tree_map
from veil.randomness import noise_generator
from veil.runtime.dpsgd_local import client_dpsgd_events, train_dpsgd_clients
from veil.runtime.pool import ClientPool
from veil.runtime.sim import default_chunk_size

DEFAULT_NUM_RUNS = 4000
"""Runs of a black-box audit (half with the canary): each trains a model."""
CANARY_FEATURE = 3.0
"""Every scaled feature of the canary input, in standard deviations: far from the data."""
BLACK_BOX = "black-box input canary"


def input_canary(experiment: Experiment) -> tuple[np.ndarray, int]:
    """``(x, label)``: every feature at ``CANARY_FEATURE``, labelled with the class the initial
    model gives the lowest probability (a mislabelled, out-of-distribution record)."""
    x = np.full(experiment.data.feature_shape, CANARY_FEATURE, dtype=np.float32)
    params = experiment.state.params
    with torch.no_grad():
        logits = experiment.model.apply(params, torch.as_tensor(x[None]).to(_device(params)))
    return x, int(logits.argmin())


def audit_dpsgd_black_box(
    experiment: Experiment,
    client: int,
    *,
    num_runs: int = DEFAULT_NUM_RUNS,
    confidence: float = 0.95,
    split_seed: int = 0,
) -> AuditResult:
    """Black-box audit of the sample-level DP-SGD of ``client`` in a built experiment: its
    records plus (in half of the runs) the `input_canary`, trained from the initial model for
    every step of the run; statistic −loss of the final model on the canary.

    Claimed ε: the ledger's for that client's events over all rounds (as the run records them).
    """
    check_num_runs(num_runs)
    local = experiment.plan.local
    data = experiment.data.clients[client]
    size = len(data.y_train)
    rounds = experiment.config.federation.rounds
    steps = rounds * int(local.num_steps(size))
    names = [c.name for c in experiment.data.clients]
    events = client_dpsgd_events(np.array([client]), np.array([size]), local, names)
    settings = experiment.privacy.ledger
    claimed = ledger_epsilon(events * rounds, settings.delta, settings.accountant)

    canary = input_canary(experiment)
    scores = _final_canary_scores(experiment, data.x_train, data.y_train, canary, num_runs, steps)
    half = num_runs // 2
    parameters = {
        "noise_multiplier": local.dp.noise_multiplier,
        "sample_rate": min(1.0, local.batch_size / size),
        "steps": steps,
        "clip_norm": local.dp.max_grad_norm,
        "accountant": settings.accountant,
        "client": data.name,
    }
    return AuditResult.from_scores(
        "DP-SGD",
        BLACK_BOX,
        "−loss on the canary",
        claimed,
        scores[:half],
        scores[half:],
        parameters,
        delta=settings.delta,
        confidence=confidence,
        split_seed=split_seed,
    )


def _final_canary_scores(
    experiment: Experiment,
    x: np.ndarray,
    y: np.ndarray,
    canary: tuple[np.ndarray, int],
    num_runs: int,
    steps: int,
) -> np.ndarray:
    """−loss on the canary of each run's final model; runs ``[0, num_runs // 2)`` train on
    ``(x, y)`` plus the canary, the others on ``(x, y)`` alone, all ``steps`` DP-SGD steps."""
    canary_x, canary_y = canary
    half = num_runs // 2
    x_in, y_in = np.concatenate([x, canary_x[None]]), np.concatenate([y, [canary_y]])
    params = experiment.state.params
    pool = ClientPool.from_arrays(
        [x_in] * half + [x] * (num_runs - half),
        [y_in] * half + [y] * (num_runs - half),
        _device(params),
    )
    device = pool.x.device
    plan = replace(experiment.plan.local, steps=steps, epochs=None, prox_mu=0.0)
    generator = noise_generator(experiment.config.privacy.noise_seed_for_testing, device=device)
    module = experiment.transport.module
    chunk = default_chunk_size("dpsgd", module, len(y) + 1, device)
    target = torch.tensor([canary_y], device=device)
    x_canary = torch.as_tensor(canary_x[None], device=device)

    def canary_loss(final: Params) -> torch.Tensor:
        return F.cross_entropy(experiment.model.apply(final, x_canary), target)

    scores = []
    for start in range(0, num_runs, chunk):
        ids = np.arange(start, min(start + chunk, num_runs))
        deltas, _ = train_dpsgd_clients(module, params, pool, ids, plan, generator)
        with torch.no_grad():
            scores.append(-vmap(canary_loss)(tree_map(torch.add, deltas, params)))
    return torch.cat(scores).double().cpu().numpy()


def _device(params: Params) -> torch.device:
    return next(iter(params.values())).device
