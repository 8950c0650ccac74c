import numpy as np
import pytest
import torch
from torch.func import functional_call

from veil.attacks.shadow_models import (
    FederationStartModule,
    paired_halves,
    stacked_logits,
    train_federations,
    train_target_run,
    with_federation_column,
)
from veil.config import parse_config
from veil.errors import ConfigError
from veil.experiment import build_experiment
from veil.fl import (
    FixedCountSampler,
    LocalTraining,
    RoundPlan,
    fedadam,
    fedavg,
    identity,
    init_server_state,
    run_round,
    weighted_mean,
)
from veil.fl.local import SampleLevelDP
from veil.models import build_model
from veil.params import flatten
from veil.privacy.client_dp import clip_l2, gaussian_sum, poisson_sampling
from veil.runtime import ClientPool, SimulatedTransport

torch.set_num_threads(1)
FEATURES = (1, 2, 3)  # small "images": exercises the flattening of the federation column


def _federations(num_federations=3, num_clients=2, rows=9, seed=0):
    rng = np.random.default_rng(seed)
    return [
        [
            (rng.normal(size=(rows, *FEATURES)).astype(np.float32), rng.integers(0, 3, rows))
            for _ in range(num_clients)
        ]
        for _ in range(num_federations)
    ]


def _module():
    torch.manual_seed(0)
    return build_model("mlp", FEATURES, 3, hidden=[5])


def _init(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _own_runs(module, federations, plan, rounds):
    """Each federation's run on its own, through veil's run_round."""
    finals = []
    for clients in federations:
        pool = ClientPool.from_arrays([x for x, _ in clients], [y for _, y in clients])
        transport = SimulatedTransport(module, pool, engine="sequential")
        state = init_server_state(_init(module), plan)
        for _ in range(rounds):
            state, _ = run_round(state, plan, transport)
        finals.append(state.params)
    return finals


def _plan(local, encoder=None, aggregator=None, optimizer=None):
    return RoundPlan(
        sampler=FixedCountSampler(2),
        local=local,
        encoder=encoder or identity(),
        aggregator=aggregator or weighted_mean(),
        server_optimizer=optimizer or fedavg(),
        seed=3,
    )


def _assert_same_models(stacked, finals, atol):
    for f, params in enumerate(finals):
        for k in params:
            torch.testing.assert_close(stacked[k][f], params[k], atol=atol, rtol=0)


# Full-batch local training (batch ≥ rows): batch order cannot matter, so every federation's
# model must equal its own run's.
FULL_BATCH = LocalTraining(lr=0.3, batch_size=16, epochs=2)


@pytest.mark.parametrize(
    ("local", "optimizer"),
    [(FULL_BATCH, fedavg()), (LocalTraining(0.3, 16, epochs=2, prox_mu=0.5), fedadam(lr=0.05))],
)
def test_train_federations_equals_each_federation_run_alone(local, optimizer):
    module, federations = _module(), _federations()
    plan = _plan(local, optimizer=optimizer)
    stacked = train_federations(module, _init(module), federations, plan, rounds=3)
    _assert_same_models(stacked, _own_runs(module, federations, plan, 3), atol=1e-5)
    assert not torch.allclose(stacked["1.weight"][0], stacked["1.weight"][1])


def test_sample_level_dp_path_trains_from_each_federations_model():
    # batch = rows (q = 1), no clipping (C huge), negligible noise: DP-SGD is gradient descent
    module, federations = _module(), _federations()
    dp = LocalTraining(0.3, 9, epochs=2, dp=SampleLevelDP(1e-12, 1e6))
    stacked = train_federations(module, _init(module), federations, _plan(dp), rounds=3)
    descent = _plan(LocalTraining(0.3, 9, epochs=2))
    _assert_same_models(stacked, _own_runs(module, federations, descent, 3), atol=1e-4)


def test_client_level_dp_aggregates_each_federation_separately():
    module, federations = _module(), _federations()  # equal client sizes: mean = sum / 2
    noisy = gaussian_sum(1e-12, 1e6, 2, poisson_sampling(1.0))
    plan = _plan(FULL_BATCH, encoder=clip_l2(1e6), aggregator=noisy)
    stacked = train_federations(module, _init(module), federations, plan, rounds=3)
    _assert_same_models(stacked, _own_runs(module, federations, _plan(FULL_BATCH), 3), atol=1e-4)


def test_train_federations_clips_every_update_under_client_level_dp():
    module, federations = _module(), _federations()
    aggregator = gaussian_sum(1e-12, 1e-3, 2, poisson_sampling(1.0))
    plan = _plan(FULL_BATCH, encoder=clip_l2(1e-3), aggregator=aggregator)
    stacked = train_federations(module, _init(module), federations, plan, rounds=2)
    init = flatten(_init(module))
    for f in range(3):
        moved = flatten({k: v[f] for k, v in stacked.items()}) - init
        assert float(moved.norm()) <= 2 * 1e-3 * (1 + 1e-4)  # two rounds of mean-of-clipped


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rounds": 0}, "rounds must be >= 1"),
        ({"federations": []}, "at least one federation"),
        ({"federations": _federations(1, 2) + _federations(1, 3)}, r"same number .* \[2, 3\]"),
    ],
)
def test_train_federations_rejects_bad_input(kwargs, message):
    module = _module()
    arguments = {"federations": _federations(), "rounds": 1, **kwargs}
    with pytest.raises(ConfigError, match=message):
        train_federations(module, _init(module), plan=_plan(FULL_BATCH), **arguments)


def test_federation_start_module_evaluates_each_federations_model():
    module = _module()
    starts = torch.randn(2, sum(p.numel() for p in module.parameters()))
    wrapped = FederationStartModule(module, 2, FEATURES)
    wrapped.starts.copy_(starts)
    x = np.random.default_rng(1).normal(size=(4, *FEATURES)).astype(np.float32)
    u = {k: 0.1 * torch.randn_like(v) for k, v in wrapped.named_parameters()}
    for f in range(2):
        out = functional_call(wrapped, u, (torch.as_tensor(with_federation_column(x, f)),))
        offset = 0
        at = {}
        for k, v in module.named_parameters():
            at[k] = starts[f, offset : offset + v.numel()].view_as(v) + u[f"model.{k}"]
            offset += v.numel()
        torch.testing.assert_close(out, functional_call(module, at, (torch.as_tensor(x),)))


def test_with_federation_column_prepends_the_id():
    x = np.arange(12, dtype=np.float32).reshape(2, 1, 2, 3)
    out = with_federation_column(x, 7)
    assert out.shape == (2, 7) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], [7, 7])
    np.testing.assert_array_equal(out[:, 1:], x.reshape(2, 6))


@pytest.mark.parametrize("federation", [-1, 2**24])
def test_with_federation_column_rejects_ids_float32_cannot_hold(federation):
    with pytest.raises(ConfigError, match="federation id must be in"):
        with_federation_column(np.zeros((1, 2), np.float32), federation)


def test_paired_halves_is_balanced_stratified_and_paired():
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 3, n) for n in (2, 7, 30)]
    masks = paired_halves(np.random.default_rng(1), labels, 8)
    assert masks.shape == (8, 39) and masks.dtype == bool
    np.testing.assert_array_equal(masks.sum(0), 4)  # every row IN exactly half of the models
    np.testing.assert_array_equal(masks[0::2], ~masks[1::2])
    cuts = np.cumsum([2, 7])
    for mask in masks:
        for keep, y in zip(np.split(mask, cuts), labels, strict=True):
            assert 1 <= keep.sum() <= len(y) - 1
            for label in np.unique(y):  # each label split floor/ceil of half
                count, kept = (y == label).sum(), keep[y == label].sum()
                assert count // 2 <= kept <= -(-count // 2)
    assert len({m.tobytes() for m in masks}) == 8  # fresh halves for every pair


@pytest.mark.parametrize(
    ("labels", "num_models", "message"),
    [
        ([np.zeros(4)], 3, "even and >= 2"),
        ([np.zeros(4)], 0, "even and >= 2"),
        ([np.zeros(4), np.zeros(1)], 2, r"at least 2 training rows .* \[4, 1\]"),
        ([], 2, "at least 2 training rows"),
    ],
)
def test_paired_halves_rejects_bad_input(labels, num_models, message):
    with pytest.raises(ConfigError, match=message):
        paired_halves(np.random.default_rng(0), labels, num_models)


def test_stacked_logits_evaluates_every_model():
    module = _module()
    stacked = {k: torch.stack([v, 2 * v]) for k, v in _init(module).items()}
    x = torch.randn(5, *FEATURES)
    logits = stacked_logits(module, stacked, x)
    assert logits.shape == (2, 5, 3)
    for f in range(2):
        params = {k: v[f] for k, v in stacked.items()}
        torch.testing.assert_close(logits[f], functional_call(module, params, (x,)))


def test_train_target_run_trains_the_configs_run_on_the_given_rows(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    config = parse_config(
        {
            "partition": {"method": "iid", "num_clients": 3},
            "federation": {"rounds": 2},
            "privacy": {"target_epsilon": 4.0, "clip_norm": 0.5, "ledger": str(ledger)},
        }
    )
    experiment = build_experiment(config.model_copy(update={"privacy": None}))
    rows = [(c.x_train[::2], c.y_train[::2]) for c in experiment.data.clients]
    target, metrics = train_target_run(experiment, config, rows)
    np.testing.assert_array_equal(target.transport.pool.sizes, [len(y) for _, y in rows])
    assert target.state.round_index == 2 and metrics["final"]["rounds"] == 2
    assert 3.5 < metrics["final"]["epsilon"] <= 4.0  # DP-FedAvg calibrated to the run's ε
    assert not ledger.exists()  # the run's own ledger file is left alone
    plain, _ = train_target_run(experiment, config.model_copy(update={"privacy": None}), rows)
    first = next(iter(plain.state.params))
    assert not torch.equal(plain.state.params[first], target.state.params[first])
