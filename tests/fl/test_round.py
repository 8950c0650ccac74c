import numpy as np
import pytest
import torch

from veil.errors import PrivacyBudgetExceeded
from veil.fl import (
    ClientUpdates,
    FixedCountSampler,
    Link,
    LocalTraining,
    PoissonSampler,
    RoundPlan,
    chain,
    fedavg,
    identity,
    init_server_state,
    run_round,
    weighted_mean,
)


class FakeTransport:
    """Client c's update is (c + 1)·ones, its weight c + 1 and its training loss c."""

    num_clients = 6

    def __init__(self):
        self.calls = []

    def collect(self, params, client_ids, round_index, plan, encoder_state, key):
        self.calls.append((client_ids.tolist(), round_index))
        scale = torch.as_tensor(client_ids + 1.0, dtype=torch.float32)
        deltas = {"w": scale[:, None] * torch.ones(len(client_ids), 2)}
        updates = ClientUpdates(deltas, scale, torch.as_tensor(client_ids))
        updates, encoder_state, events = plan.encoder.apply(updates, encoder_state, key)
        return updates, encoder_state, events, torch.as_tensor(client_ids, dtype=torch.float32)


def plan(sampler=None, encoder=None, aggregator=None):
    return RoundPlan(
        sampler or FixedCountSampler(3),
        LocalTraining(lr=0.1, batch_size=1, steps=1),
        encoder or identity(),
        aggregator or weighted_mean(),
        fedavg(),
        seed=4,
    )


def event_link(name: str) -> Link:
    return Link(lambda params: None, lambda value, state, key: (value, state, [name]))


class ListLedger:
    def __init__(self, refuse=False):
        self.records, self.refuse = [], refuse

    def record(self, round_index, events):
        if self.refuse:
            raise PrivacyBudgetExceeded("budget spent")
        self.records.append((round_index, events))


def test_round_applies_weighted_fedavg_and_counts_rounds():
    p = plan()
    state = init_server_state({"w": torch.zeros(2)}, p)
    transport = FakeTransport()
    state, metrics = run_round(state, p, transport)
    ids = metrics.client_ids
    weights = ids + 1.0
    expected = (weights**2).sum() / weights.sum()
    assert torch.allclose(state.params["w"], torch.full((2,), float(expected)))
    assert state.round_index == 1 and metrics.round_index == 1 and len(ids) == 3
    assert transport.calls == [(ids.tolist(), 1)]
    assert metrics.train_loss == pytest.approx(float((ids * weights).sum() / weights.sum()))


def test_sampling_is_reproducible_per_seed_and_round():
    p = plan()
    state = init_server_state({"w": torch.zeros(2)}, p)
    a = run_round(state, p, FakeTransport())[1].client_ids
    b = run_round(state, p, FakeTransport())[1].client_ids
    next_round = run_round(run_round(state, p, FakeTransport())[0], p, FakeTransport())[1]
    assert np.array_equal(a, b) and not np.array_equal(a, next_round.client_ids)


def test_events_reach_the_ledger_in_chain_order():
    p = plan(
        encoder=event_link("client-noise"),
        aggregator=chain(weighted_mean(), event_link("server-noise")),
    )
    ledger = ListLedger()
    state = init_server_state({"w": torch.zeros(2)}, p)
    _, metrics = run_round(state, p, FakeTransport(), ledger)
    assert ledger.records == [(1, ["client-noise", "server-noise"])]
    assert metrics.events == ["client-noise", "server-noise"]


def test_a_refused_release_raises_instead_of_returning_a_model():
    p = plan(aggregator=chain(weighted_mean(), event_link("server-noise")))
    state = init_server_state({"w": torch.zeros(2)}, p)
    with pytest.raises(PrivacyBudgetExceeded, match="budget spent"):
        run_round(state, p, FakeTransport(), ListLedger(refuse=True))


def test_an_empty_poisson_round_still_runs_both_chains_and_the_ledger():
    p = plan(
        sampler=PoissonSampler(1e-9),
        encoder=event_link("client-noise"),
        aggregator=chain(weighted_mean(), event_link("server-noise")),
    )
    state = init_server_state({"w": torch.ones(2)}, p)
    transport, ledger = FakeTransport(), ListLedger()
    new_state, metrics = run_round(state, p, transport, ledger)
    assert len(metrics.client_ids) == 0 and metrics.train_loss is None
    assert new_state.round_index == 1 and torch.equal(new_state.params["w"], torch.ones(2))
    assert transport.calls == [([], 1)]
    assert ledger.records == [(1, ["client-noise", "server-noise"])]


def test_secret_sampling_does_not_follow_the_published_seed():
    from dataclasses import replace

    from veil.randomness import InsecureNoiseWarning

    p = replace(plan(sampler=PoissonSampler(0.5)), secret_sampling=True)
    state = init_server_state({"w": torch.zeros(2)}, p)
    draws = {tuple(run_round(state, p, FakeTransport())[1].client_ids) for _ in range(12)}
    assert len(draws) > 1  # the same seed, different samples (equal 12 times: p ≈ 2^-66)
    reproducible = replace(p, noise_seed_for_testing=3)
    with pytest.warns(InsecureNoiseWarning, match="sampling"):
        a = run_round(state, reproducible, FakeTransport())[1].client_ids
        b = run_round(state, reproducible, FakeTransport())[1].client_ids
    assert list(a) == list(b)
