"""Partitioners: disjoint, covering, sorted; skewed the way their parameters say."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.data import (
    PARTITION_METHODS,
    dirichlet_partition,
    iid_partition,
    partition,
    quantity_skew_partition,
    shard_partition,
    site_partition,
)
from veil.errors import ConfigError

rng = np.random.default_rng


def assert_is_partition(parts: list[np.ndarray], num_rows: int, num_clients: int) -> None:
    assert len(parts) == num_clients
    for rows in parts:
        assert rows.dtype == np.int64
        assert (np.diff(rows) > 0).all()  # sorted, no repeats
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(num_rows))


def label_distributions(parts: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
    counts = np.stack([np.bincount(labels[rows], minlength=labels.max() + 1) for rows in parts])
    return counts / counts.sum(axis=1, keepdims=True)


def mean_label_skew(parts: list[np.ndarray], labels: np.ndarray) -> float:
    """Mean total-variation distance between a client's label distribution and the global one."""
    overall = np.bincount(labels) / labels.size
    return float(0.5 * np.abs(label_distributions(parts, labels) - overall).sum(axis=1).mean())


@st.composite
def labelled_clients(draw, max_rows: int = 300):
    """(labels, num_clients, seed): random labels over 1..10 classes, 1..40 clients."""
    num_rows = draw(st.integers(1, max_rows))
    num_clients = draw(st.integers(1, min(num_rows, 40)))
    num_classes = draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2**32 - 1))
    return rng(seed).integers(0, num_classes, num_rows), num_clients, seed


@settings(max_examples=40, deadline=None)
@given(labelled_clients())
def test_iid_is_a_partition_with_equal_sizes(case):
    labels, num_clients, seed = case
    parts = iid_partition(labels.size, num_clients, rng(seed))
    assert_is_partition(parts, labels.size, num_clients)
    sizes = [rows.size for rows in parts]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=40, deadline=None)
@given(labelled_clients(), st.floats(0.05, 100.0))
def test_dirichlet_is_a_partition_with_nonempty_clients(case, alpha):
    labels, num_clients, seed = case
    num_clients = min(num_clients, max(1, labels.size // 10))  # room for every client
    try:
        parts = dirichlet_partition(labels, num_clients, alpha, rng(seed))
    except ConfigError as error:  # tiny alpha with many clients may never give every client a row
        assert "no Dirichlet draw" in str(error)
        return
    assert_is_partition(parts, labels.size, num_clients)
    assert min(rows.size for rows in parts) >= 1


@settings(max_examples=40, deadline=None)
@given(labelled_clients(), st.integers(1, 5))
def test_shards_are_a_partition_of_label_sorted_blocks(case, shards_per_client):
    labels, num_clients, seed = case
    shards_per_client = min(shards_per_client, labels.size // num_clients)
    parts = shard_partition(labels, num_clients, shards_per_client, rng(seed))
    assert_is_partition(parts, labels.size, num_clients)
    sizes = [rows.size for rows in parts]
    assert max(sizes) - min(sizes) <= shards_per_client  # equal shards, up to one row each


@settings(max_examples=40, deadline=None)
@given(labelled_clients(), st.floats(0.1, 100.0))
def test_quantity_skew_is_a_partition(case, beta):
    labels, num_clients, seed = case
    num_clients = min(num_clients, max(1, labels.size // 10))
    try:
        parts = quantity_skew_partition(labels.size, num_clients, beta, rng(seed))
    except ConfigError as error:
        assert "no Dirichlet draw" in str(error)
        return
    assert_is_partition(parts, labels.size, num_clients)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=1, max_size=200))
def test_site_partition_gives_one_client_per_site(site_list):
    sites = np.array(site_list, dtype=np.int64)
    parts = site_partition(sites)
    assert_is_partition(parts, sites.size, np.unique(sites).size)
    for rows, site in zip(parts, np.unique(sites), strict=True):
        assert (sites[rows] == site).all()


def test_same_rng_seed_same_partition():
    labels = rng(0).integers(0, 5, 500)
    a = dirichlet_partition(labels, 10, 0.3, rng(7))
    b = dirichlet_partition(labels, 10, 0.3, rng(7))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_small_alpha_skews_labels_more_than_large_alpha():
    labels = np.repeat(np.arange(10), 200)
    skew = {
        a: mean_label_skew(dirichlet_partition(labels, 20, a, rng(0)), labels)
        for a in (0.1, 1.0, 1000.0)
    }
    assert skew[0.1] > skew[1.0] > skew[1000.0]
    assert skew[0.1] > 0.5 and skew[1000.0] < 0.1


def test_dirichlet_respects_min_size():
    labels = np.repeat(np.arange(4), 100)
    parts = dirichlet_partition(labels, 8, 0.5, rng(0), min_size=20)
    assert min(rows.size for rows in parts) >= 20


def test_dirichlet_gives_up_with_a_clear_error():
    labels = np.repeat(np.arange(2), 50)
    with pytest.raises(
        ConfigError,
        match=r"no Dirichlet draw with alpha=0.01 gave every client "
        r">= 2 rows in 100 tries; increase alpha",
    ):
        dirichlet_partition(labels, 50, 0.01, rng(0), min_size=2)


def test_aligned_shards_give_each_client_at_most_its_shard_count_of_labels():
    labels = np.repeat(np.arange(10), 100)  # 100 shards of 10 rows, each of one label
    parts = shard_partition(labels, 50, 2, rng(0))
    assert all(rows.size == 20 for rows in parts)
    assert max(np.unique(labels[rows]).size for rows in parts) <= 2
    assert mean_label_skew(parts, labels) > 0.75


def test_unaligned_shards_hold_at_most_two_labels_each():
    labels = rng(1).integers(0, 7, 1000)
    parts = shard_partition(labels, 30, 3, rng(1))
    assert max(np.unique(labels[rows]).size for rows in parts) <= 2 * 3


def test_quantity_skew_varies_sizes_but_not_labels():
    labels = np.repeat(np.arange(5), 1000)
    skewed = quantity_skew_partition(labels.size, 20, 0.5, rng(0))
    sizes = np.array([rows.size for rows in skewed])
    assert sizes.std() / sizes.mean() > 0.5  # IID sizes would differ by at most one row
    big = [rows for rows in skewed if rows.size >= 200]
    assert mean_label_skew(big, labels) < 0.1


def test_quantity_skew_respects_min_size_and_gives_up_clearly():
    parts = quantity_skew_partition(1000, 10, 1.0, rng(0), min_size=30)
    assert min(rows.size for rows in parts) >= 30
    with pytest.raises(ConfigError, match=r"no Dirichlet draw with beta=0.01 .* increase beta"):
        quantity_skew_partition(100, 50, 0.01, rng(0), min_size=2)


def test_site_partition_handles_sparse_site_ids():
    parts = site_partition(np.array([7, 3, 7, 3, 9]))
    assert [rows.tolist() for rows in parts] == [[1, 3], [0, 2], [4]]


@pytest.mark.parametrize(
    ("method", "kwargs", "direct"),
    [
        ("iid", {}, lambda labels, r: iid_partition(labels.size, 6, r)),
        ("dirichlet", {"alpha": 0.5}, lambda labels, r: dirichlet_partition(labels, 6, 0.5, r)),
        ("shards", {"shards_per_client": 2}, lambda labels, r: shard_partition(labels, 6, 2, r)),
        (
            "quantity",
            {"beta": 2.0},
            lambda labels, r: quantity_skew_partition(labels.size, 6, 2.0, r),
        ),
    ],
)
def test_partition_dispatches_to_the_named_method(method, kwargs, direct):
    labels = rng(0).integers(0, 3, 120)
    parts = partition(method, labels=labels, num_clients=6, rng=rng(4), **kwargs)
    expected = direct(labels, rng(4))
    assert all(np.array_equal(a, b) for a, b in zip(parts, expected, strict=True))


def test_partition_by_site():
    sites = np.array([0, 1, 1, 2, 0])
    parts = partition(
        "site", labels=np.zeros(5, dtype=np.int64), sites=sites, num_clients=3, rng=rng(0)
    )
    assert [rows.tolist() for rows in parts] == [[0, 4], [1, 2], [3]]


def test_every_method_is_listed():
    assert PARTITION_METHODS == ("iid", "dirichlet", "shards", "quantity", "site")


LABELS = np.repeat(np.arange(2), 10)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: iid_partition(10, 0, rng(0)), r"num_clients must be >= 1 \(got 0\)"),
        (
            lambda: iid_partition(10, 11, rng(0)),
            r"num_clients must be <= the number of rows \(10\) \(got 11\)",
        ),
        (lambda: iid_partition(10, 2, 0), r"rng must be a numpy.random.Generator.*\(got int\)"),
        (
            lambda: dirichlet_partition(LABELS, 2, 0.0, rng(0)),
            r"alpha must be > 0 and finite \(got 0.0\)",
        ),
        (
            lambda: dirichlet_partition(LABELS, 2, -1.0, rng(0)),
            r"alpha must be > 0 and finite \(got -1.0\)",
        ),
        (lambda: dirichlet_partition(LABELS, 2, np.inf, rng(0)), r"alpha .* \(got inf\)"),
        (lambda: quantity_skew_partition(20, 2, np.nan, rng(0)), r"beta .* \(got nan\)"),
        (
            lambda: dirichlet_partition(LABELS, 2, 1.0, rng(0), min_size=11),
            r"min_size must be in \[0, num_rows // num_clients\] = \[0, 10\] \(got 11\)",
        ),
        (
            lambda: dirichlet_partition(LABELS.astype(float), 2, 1.0, rng(0)),
            r"labels must be a non-empty 1-D integer array \(got float64 \(20,\)\)",
        ),
        (
            lambda: dirichlet_partition(LABELS.reshape(4, 5), 2, 1.0, rng(0)),
            r"labels must be a non-empty 1-D integer array",
        ),
        (
            lambda: quantity_skew_partition(20, 2, 0.0, rng(0)),
            r"beta must be > 0 and finite \(got 0.0\)",
        ),
        (
            lambda: shard_partition(LABELS, 2, 0, rng(0)),
            r"shards_per_client must be >= 1 \(got 0\)",
        ),
        (
            lambda: shard_partition(LABELS, 4, 6, rng(0)),
            r"num_clients \* shards_per_client <= number of rows, i.e. 4 \* 6 <= 20 \(got 24\)",
        ),
        (
            lambda: site_partition(np.array([0.5, 1.0])),
            r"sites must be a non-empty 1-D integer array \(got float64 \(2,\)\)",
        ),
        (lambda: site_partition(np.array([], dtype=np.int64)), r"sites must be a non-empty"),
        (
            lambda: partition("random", labels=LABELS, num_clients=2, rng=rng(0)),
            r"partition method must be one of \('iid', 'dirichlet', 'shards', 'quantity', 'site'\) "
            r"\(got 'random'\)",
        ),
        (
            lambda: partition("dirichlet", labels=LABELS, num_clients=2, rng=rng(0)),
            r"partition method 'dirichlet' needs alpha > 0 \(got None\)",
        ),
        (
            lambda: partition("shards", labels=LABELS, num_clients=2, rng=rng(0)),
            r"partition method 'shards' needs shards_per_client >= 1 \(got None\)",
        ),
        (
            lambda: partition("quantity", labels=LABELS, num_clients=2, rng=rng(0)),
            r"partition method 'quantity' needs beta > 0 \(got None\)",
        ),
        (
            lambda: partition("site", labels=LABELS, num_clients=2, rng=rng(0)),
            r"partition method 'site' needs a data set with sites .* use one of 'iid'",
        ),
        (
            lambda: partition("site", labels=LABELS, sites=LABELS, num_clients=3, rng=rng(0)),
            r"num_clients must equal the number of sites \(2\) for partition method 'site' "
            r"\(got 3\)",
        ),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ConfigError, match=message):
        call()
