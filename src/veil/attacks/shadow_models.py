"""Target and shadow runs for membership inference: many federated runs trained at once.

LiRA (Carlini et al. 2022) and RMIA (Zarifzadeh et al. 2024) compare a target model, trained on
a random half of the data (`train_target_run`: a run exactly as `veil run` trains it), with shadow
models trained the same way on other halves (`paired_halves`). `train_federations` trains F such
federated runs together: their K clients each become F·K clients of one `ClientPool`, and each
round trains all of them in one call of the simulator (`SimulatedTransport.collect`: the ``vmap``
engine, or the DP-SGD engine under sample-level DP).

Those engines start every client from one shared global model, but after round 1 federation f
has its own, θ_f. So they train the change of variables θ = θ_f + u from u = 0:
`FederationStartModule` evaluates the model at θ_f + u, reading f from a column prepended to
every row. A gradient in u is the gradient in θ, so each client's update u, FedProx's term
μ/2·‖u‖² and DP-SGD's per-sample clipping are exactly those of the client in its own run. The
client encoder (e.g. clipping) runs on all F·K updates at once, the server aggregator (mean, DP
noise) once per federation, and the element-wise server optimizer on all F global models at once.

Shadow models are the attacker's own, so no privacy claim covers them; under DP their noise
still comes from `veil.randomness.noise_generator`, as in the target's run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from veil.config import RunConfig
from veil.errors import ConfigError, check
from veil.experiment import (
    Experiment,
    build_experiment,
    execute,
)
from veil.fl.links import ClientUpdates
from veil.fl.round import RoundPlan
from veil.params import Params, broadcast, flatten_stacked, stack, unflatten
from veil.randomness import noise_generator, sampling_generator
from veil.runtime import ClientPool, SimulatedTransport

Client = tuple[np.ndarray, np.ndarray]  # one client's training rows: features and labels
INNER = "model."  # the wrapped model's parameter names inside `FederationStartModule`
SHADOW_NOISE_STREAM = 2**32  # testing noise seeds: shadow round r uses stream 2³² + r, not r
MAX_FEDERATIONS = 2**24  # federation ids travel as float32 and are exact up to 2²⁴


class FederationStartModule(nn.Module):
    """``model`` evaluated at ``starts[f] + u``: u are this module's parameters and f is the
    federation id in column 0 of the input's first row (the rest of the row is the flattened
    features). Every row of a call must come from one federation, except rows that the caller
    masks out of the loss."""

    def __init__(self, model: nn.Module, num_federations: int, feature_shape: Sequence[int]):
        super().__init__()
        self.model = model
        self.feature_shape = tuple(feature_shape)
        size = sum(p.numel() for p in model.parameters())
        self.register_buffer("starts", torch.zeros(num_federations, size))
        self._shapes = {k: torch.empty_like(v, device="meta") for k, v in model.named_parameters()}

    def forward(self, x: Tensor) -> Tensor:
        federation = x[0, 0].long().reshape(1)
        start = unflatten(torch.index_select(self.starts, 0, federation)[0], self._shapes)
        params = {k: u + start[k] for k, u in self.model.named_parameters()}
        features = x[:, 1:].reshape(-1, *self.feature_shape)
        return functional_call(self.model, params, (features,))


def with_federation_column(x: np.ndarray, federation: int) -> np.ndarray:
    """``x [n, *shape]`` flattened to ``[n, 1 + features]`` with ``federation`` in column 0."""
    check(
        0 <= federation < MAX_FEDERATIONS,
        f"federation id must be in [0, {MAX_FEDERATIONS}) (got {federation})",
    )
    flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    return np.concatenate([np.full((len(x), 1), federation, dtype=np.float32), flat], axis=1)


def train_federations(
    module: nn.Module,
    init_params: Params,
    federations: Sequence[Sequence[Client]],
    plan: RoundPlan,
    rounds: int,
    *,
    device: torch.device | str = "cpu",
    chunk_size: int | None = None,
) -> Params:
    """Run ``rounds`` rounds of ``plan`` in every federation (a list of clients' ``(x, y)``
    training rows; all federations have the same number of clients), all from ``init_params``.
    Returns the final global models stacked on a leading federation axis ``[F, ...]``.

    Client sampling, local training, encoder, aggregator and server optimizer are ``plan``'s,
    as in `veil.fl.run_round`; each federation samples its clients and draws its DP noise
    independently (no ledger: shadow models release nothing). The encoder runs once on all
    federations' updates, so its state (veil's client encoders keep none) is shared.
    """
    check(rounds >= 1, f"rounds must be >= 1 (got {rounds})")
    check(len(federations) >= 1, "train_federations needs at least one federation")
    check(
        len(federations) <= MAX_FEDERATIONS,
        f"at most {MAX_FEDERATIONS} federations (got {len(federations)})",
    )
    num_clients = len(federations[0])
    if num_clients == 0 or any(len(clients) != num_clients for clients in federations):
        raise ConfigError(
            "every federation needs the same number (>= 1) of clients (got "
            f"{sorted({len(clients) for clients in federations})})"
        )
    num_federations = len(federations)
    feature_shape = np.asarray(federations[0][0][0]).shape[1:]
    pool = ClientPool.from_arrays(
        [with_federation_column(x, f) for f, clients in enumerate(federations) for x, _ in clients],
        [y for clients in federations for _, y in clients],
        device,
    )
    wrapped = FederationStartModule(module, num_federations, feature_shape)
    transport = SimulatedTransport(wrapped, pool, engine="vmap", chunk_size=chunk_size)
    init_params = {k: v.to(pool.x.device) for k, v in init_params.items()}
    params = broadcast(init_params, num_federations)
    optimizer_state = plan.server_optimizer.init(params)
    encoder_state = plan.encoder.init(init_params)
    aggregator_states = [plan.aggregator.init(init_params) for _ in range(num_federations)]
    zeros = {INNER + k: torch.zeros_like(v) for k, v in init_params.items()}
    owner = torch.arange(num_federations, device=pool.x.device).repeat_interleave(num_clients)
    for round_index in range(1, rounds + 1):
        key = noise_generator(
            plan.noise_seed_for_testing, SHADOW_NOISE_STREAM + round_index, pool.x.device
        )
        client_ids = _sample_clients(plan, round_index, num_federations, num_clients)
        transport.module.starts.copy_(flatten_stacked(params))
        updates, encoder_state, _, _ = transport.collect(
            zeros, client_ids, round_index, plan, encoder_state, key
        )
        deltas = {k.removeprefix(INNER): v for k, v in updates.deltas.items()}
        federation_of = owner[updates.client_ids]
        aggregates = []
        for f in range(num_federations):
            mine = federation_of == f
            part = ClientUpdates(
                {k: v[mine] for k, v in deltas.items()},
                updates.weights[mine],
                updates.client_ids[mine],
            )
            aggregate, aggregator_states[f], _ = plan.aggregator.apply(
                part, aggregator_states[f], key
            )
            aggregates.append(aggregate)
        params, optimizer_state = plan.server_optimizer.update(
            params, stack(aggregates), optimizer_state
        )
    return params


def train_target_run(
    experiment: Experiment, config: RunConfig, rows: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[Experiment, dict[str, Any]]:
    """``config``'s run on the data of ``experiment`` (built from ``config``, with or without its
    privacy section), with each client's training rows replaced by its ``rows``, run to the end
    as `veil run` runs it: `build_experiment` on these rows, then `execute`. DP is calibrated to
    these clients; the ledger is kept in memory, so a ``privacy.ledger`` file is neither read
    nor written."""
    if config.privacy:
        config = config.model_copy(
            update={"privacy": config.privacy.model_copy(update={"ledger": None})}
        )
    clients = tuple(
        replace(c, x_train=x, y_train=y)
        for c, (x, y) in zip(experiment.data.clients, rows, strict=True)
    )
    target = build_experiment(config, replace(experiment.data, clients=clients))
    return target, execute(target)


def paired_halves(
    rng: np.random.Generator, labels: Sequence[np.ndarray], num_models: int
) -> np.ndarray:
    """Which rows each of ``num_models`` (even) models trains on: ``bool [num_models, rows]``
    over the rows of clients whose labels are ``labels`` (one array per client, in order).

    Model 2j keeps a random half of every client's rows, model 2j + 1 the other half, so every
    row is in exactly half of the models (Carlini et al.'s balanced design) and no client goes
    empty. Halves are stratified by label (rows sorted by label, random within a label, then
    every other one from a random start), so members and non-members have the same class
    balance: a difference there is an aggregate statistic, which DP does not hide.
    """
    check(
        num_models >= 2 and num_models % 2 == 0,
        f"num_models must be even and >= 2 (got {num_models})",
    )
    sizes = [len(y) for y in labels]
    check(
        len(sizes) >= 1 and min(sizes) >= 2,
        f"every client needs at least 2 training rows to split in halves (got sizes "
        f"{sizes}); use fewer clients or a smaller data.test_fraction",
    )
    masks = []
    for _ in range(num_models // 2):
        keep = np.concatenate([_stratified_half(rng, np.asarray(y)) for y in labels])
        masks += [keep, ~keep]
    return np.stack(masks)


def stacked_logits(module: nn.Module, stacked_params: Params, x: Tensor) -> Tensor:
    """Logits ``[F, n, classes]`` of the F models in ``stacked_params`` on the same rows ``x``."""
    with torch.no_grad():
        return vmap(lambda p: functional_call(module, p, (x,)))(stacked_params)


def _stratified_half(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    order = np.lexsort((rng.random(len(labels)), labels))
    mask = np.zeros(len(labels), dtype=bool)
    mask[order[int(rng.integers(2)) :: 2]] = True
    return mask


def _sample_clients(
    plan: RoundPlan, round_index: int, num_federations: int, num_clients: int
) -> np.ndarray:
    """Pool ids of the clients each federation samples in ``round_index`` (federation f's
    clients are ``f·K .. f·K + K - 1``): secretly under DP, as in the target's run, else from
    the run seed."""
    chosen = []
    for f in range(num_federations):
        if plan.secret_sampling:
            stream = SHADOW_NOISE_STREAM + round_index * MAX_FEDERATIONS + f
            rng = sampling_generator(plan.noise_seed_for_testing, stream)
        else:
            rng = np.random.default_rng([plan.seed, round_index, f])
        chosen.append(f * num_clients + plan.sampler.sample(num_clients, rng))
    return np.concatenate(chosen)
