import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.errors import ConfigError
from veil.fl.local import (
    PAD,
    LocalTraining,
    batch_schedule,
    batch_schedules,
    int64_bits,
    splitmix64,
)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 60), batch=st.integers(1, 16), epochs=st.integers(1, 3))
def test_epoch_schedule_visits_every_row_once_per_epoch(rows, batch, epochs):
    plan = LocalTraining(lr=0.1, batch_size=batch, epochs=epochs)
    schedule = batch_schedule(rows, plan, seed=0, round_index=1, client_id=3)
    per_epoch = -(-rows // batch)
    assert schedule.shape == (epochs * per_epoch, min(batch, rows))
    for e in range(epochs):
        block = schedule[e * per_epoch : (e + 1) * per_epoch]
        assert sorted(block[block != PAD]) == list(range(rows))


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 60), batch=st.integers(1, 16), steps=st.integers(1, 20))
def test_step_schedule_has_full_batches_of_valid_rows(rows, batch, steps):
    plan = LocalTraining(lr=0.1, batch_size=batch, steps=steps)
    schedule = batch_schedule(rows, plan, seed=1, round_index=1, client_id=3)
    assert schedule.shape == (steps, min(batch, rows))
    assert (schedule >= 0).all() and (schedule < rows).all()


def test_schedule_depends_only_on_seed_round_client():
    plan = LocalTraining(lr=0.1, batch_size=4, steps=3)
    a = batch_schedule(20, plan, seed=0, round_index=1, client_id=5)
    assert np.array_equal(a, batch_schedule(20, plan, seed=0, round_index=1, client_id=5))
    assert not np.array_equal(a, batch_schedule(20, plan, seed=0, round_index=2, client_id=5))
    assert not np.array_equal(a, batch_schedule(20, plan, seed=0, round_index=1, client_id=6))
    assert not np.array_equal(a, batch_schedule(20, plan, seed=1, round_index=1, client_id=5))


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=8),
    batch=st.integers(1, 8),
    steps=st.one_of(st.none(), st.integers(1, 9)),
)
def test_batched_schedules_equal_single_client_schedules(sizes, batch, steps):
    plan = LocalTraining(lr=0.1, batch_size=batch, steps=steps, epochs=None if steps else 2)
    ids = np.arange(len(sizes)) * 7 + 1
    batched = batch_schedules(sizes, ids, 4, 9, plan)
    for i, (n, c) in enumerate(zip(sizes, ids, strict=True)):
        single = batch_schedule(n, plan, seed=9, round_index=4, client_id=int(c))
        steps_taken, slots = single.shape
        assert torch.equal(batched[i, :steps_taken, :slots], single)
        assert (batched[i, steps_taken:] == PAD).all() and (batched[i, :, slots:] == PAD).all()


def test_shuffles_look_uniform():
    """Each row lands in each position about equally often over many clients (chi-square-ish)."""
    plan = LocalTraining(lr=0.1, batch_size=5, epochs=1)
    first_slot = batch_schedules(np.full(5000, 5), np.arange(5000), 1, 0, plan)[:, 0, 0]
    counts = np.bincount(first_slot.numpy(), minlength=5)
    assert counts.min() > 900 and counts.max() < 1100


def test_splitmix64_known_answer():
    """First outputs of SplitMix64 seeded with 0 (Vigna's splitmix64.c); input k·γ → output k+1."""
    gamma = 0x9E3779B97F4A7C15
    states = torch.tensor([int64_bits(k * gamma) for k in range(3)])
    expected = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    assert [int(v) & (2**64 - 1) for v in splitmix64(states)] == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0, "batch_size": 1, "steps": 1}, r"client.lr must be > 0 \(got 0\)"),
        ({"lr": 1, "batch_size": 0, "steps": 1}, r"client.batch_size must be >= 1"),
        ({"lr": 1, "batch_size": 1}, "exactly one of local_steps or local_epochs"),
        ({"lr": 1, "batch_size": 1, "steps": 1, "epochs": 1}, "exactly one of"),
        ({"lr": 1, "batch_size": 1, "steps": 0}, r"client.local_steps must be >= 1 \(got 0\)"),
        ({"lr": 1, "batch_size": 1, "epochs": 0}, r"client.local_epochs must be >= 1 \(got 0\)"),
        ({"lr": 1, "batch_size": 1, "epochs": 1, "prox_mu": -1}, r"client.prox_mu must be >= 0"),
    ],
)
def test_bad_local_training(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LocalTraining(**kwargs)


def test_schedules_need_one_size_per_client():
    with pytest.raises(ConfigError, match="one size per client id"):
        batch_schedules([3, 4], [0], 1, 0, LocalTraining(lr=1, batch_size=1, steps=1))


def test_schedule_refuses_an_empty_client():
    with pytest.raises(ConfigError, match="at least one training row"):
        batch_schedule(
            0, LocalTraining(lr=1, batch_size=1, steps=1), seed=0, round_index=1, client_id=0
        )
