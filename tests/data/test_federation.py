"""federate: LEAF-style per-client splits, scaling fitted on training rows only."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest

from veil.data import (
    ClientData,
    Dataset,
    FederatedData,
    federate,
    load_dataset,
    make_synthetic_classification,
    partition,
)
from veil.errors import ConfigError

METHODS = [
    ("iid", {}),
    ("dirichlet", {"alpha": 0.5}),
    ("shards", {"shards_per_client": 2}),
    ("quantity", {"beta": 1.0}),
]


def row_ids(labels: np.ndarray, sites: np.ndarray | None = None) -> Dataset:
    """A data set whose one feature is the row index, scaled by 1: the output shows the rows."""
    return Dataset(
        name="row_ids",
        x=np.arange(labels.size, dtype=np.float32)[:, None],
        y=labels.astype(np.int64),
        num_classes=int(labels.max()) + 1,
        feature_shape=(1,),
        scaling="fixed",
        pixel_max=1.0,
        sites=sites,
        site_names=None if sites is None else tuple(f"site_{s}" for s in range(sites.max() + 1)),
    )


def rows_of(x: np.ndarray) -> np.ndarray:
    return x[:, 0].astype(np.int64)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize(("method", "kwargs"), METHODS)
def test_shapes_dtypes_and_names(digits, method, kwargs):
    fed = federate(digits, method=method, num_clients=8, **kwargs)
    assert isinstance(fed, FederatedData) and fed.dataset == "digits"
    assert fed.num_clients == 8 and [c.name for c in fed.clients] == [
        f"client_{k}" for k in range(8)
    ]
    assert (fed.num_classes, fed.feature_shape) == (10, (1, 8, 8))
    for client in fed.clients:
        assert isinstance(client, ClientData)
        assert client.x_train.dtype == client.x_test.dtype == np.float32
        assert client.y_train.dtype == client.y_test.dtype == np.int64
        assert client.x_train.shape == (client.y_train.size, 1, 8, 8)
        assert client.x_test.shape == (client.y_test.size, 1, 8, 8)
    assert fed.num_train_rows + fed.y_test.size == digits.num_rows


@pytest.mark.parametrize(("method", "kwargs"), METHODS)
def test_clients_own_exactly_their_partition_rows(method, kwargs):
    labels = np.random.default_rng(0).integers(0, 4, 400)
    fed = federate(row_ids(labels), method=method, num_clients=7, seed=3, **kwargs)
    parts = partition(method, labels=labels, num_clients=7, rng=np.random.default_rng(3), **kwargs)
    for client, rows in zip(fed.clients, parts, strict=True):
        owned = np.concatenate([rows_of(client.x_train), rows_of(client.x_test)])
        np.testing.assert_array_equal(np.sort(owned), rows)
        np.testing.assert_array_equal(client.y_train, labels[rows_of(client.x_train)])
        np.testing.assert_array_equal(client.y_test, labels[rows_of(client.x_test)])


def test_each_client_holds_out_its_share_and_keeps_a_training_row():
    labels = np.zeros(1 + 2 + 5 + 30 + 62, dtype=np.int64)
    sites = np.repeat(np.arange(5), [1, 2, 5, 30, 62])
    fed = federate(row_ids(labels, sites), method="site", num_clients=5, test_fraction=0.1)
    sizes = [1, 2, 5, 30, 62]
    expected_test = [min(math.ceil(0.1 * m), m - 1) for m in sizes]
    assert expected_test == [0, 1, 1, 3, 7]
    assert [c.y_test.size for c in fed.clients] == expected_test
    np.testing.assert_array_equal(fed.train_sizes, np.subtract(sizes, expected_test))


def test_test_split_is_stratified_within_a_client():
    labels = np.repeat([0, 1, 2], [25, 15, 10])
    for seed in range(5):
        (client,) = federate(row_ids(labels), method="iid", num_clients=1, seed=seed).clients
        np.testing.assert_array_equal(np.bincount(client.y_test, minlength=3), [5, 3, 2])


def test_every_row_is_equally_likely_to_be_a_test_row():
    labels = np.repeat([0, 1], [3, 7])
    hits = np.zeros(10)
    for seed in range(400):
        (client,) = federate(row_ids(labels), method="iid", num_clients=1, seed=seed).clients
        hits[rows_of(client.x_test)] += 1
    np.testing.assert_allclose(hits / 400, 0.2, atol=0.07)


def test_zero_test_fraction_keeps_every_row_for_training(digits):
    fed = federate(digits, method="iid", num_clients=4, test_fraction=0.0)
    assert fed.y_test.size == 0 and fed.num_train_rows == digits.num_rows


def test_global_test_set_is_the_clients_test_rows_in_order(digits):
    fed = federate(digits, method="dirichlet", num_clients=6, alpha=0.3)
    np.testing.assert_array_equal(fed.x_test, np.concatenate([c.x_test for c in fed.clients]))
    np.testing.assert_array_equal(fed.y_test, np.concatenate([c.y_test for c in fed.clients]))


def test_train_sizes_and_totals(digits):
    fed = federate(digits, method="quantity", num_clients=5, beta=0.5)
    assert fed.train_sizes.dtype == np.int64
    np.testing.assert_array_equal(fed.train_sizes, [c.y_train.size for c in fed.clients])
    assert fed.num_train_rows == sum(c.y_train.size for c in fed.clients)


def test_site_method_names_clients_after_sites():
    fed = federate(load_dataset("fraud"), method="site", num_clients=5)
    assert [c.name for c in fed.clients] == [f"bank_{b}" for b in range(5)]
    np.testing.assert_array_equal(fed.train_sizes, [1600] * 5)


def test_standard_scaling_is_fitted_on_training_rows_only():
    data = load_dataset("breast_cancer")
    fed = federate(data, method="dirichlet", num_clients=5, alpha=1.0)
    train = np.concatenate([c.x_train for c in fed.clients])
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(train.std(axis=0), 1.0, atol=1e-4)
    assert np.abs(fed.x_test.mean(axis=0)).max() > 0.01  # test rows are not re-centred


def test_changing_test_rows_changes_no_training_feature():
    data = load_dataset("breast_cancer")
    marked = federate(row_ids(data.y), method="dirichlet", num_clients=5, alpha=1.0, seed=2)
    test_rows = rows_of(marked.x_test)
    assert test_rows.size > 0
    x = data.x.copy()
    x[test_rows] = x[test_rows] * 100.0 + 7.0
    before = federate(data, method="dirichlet", num_clients=5, alpha=1.0, seed=2)
    after = federate(
        dataclasses.replace(data, x=x), method="dirichlet", num_clients=5, alpha=1.0, seed=2
    )
    for a, b in zip(before.clients, after.clients, strict=True):
        np.testing.assert_array_equal(a.x_train, b.x_train)
        assert not np.array_equal(a.x_test, b.x_test)


def test_fixed_scaling_divides_by_pixel_max(digits):
    fed = federate(digits, method="iid", num_clients=3)
    train = np.concatenate([c.x_train for c in fed.clients])
    assert train.min() == 0.0 and train.max() == 1.0
    np.testing.assert_array_equal(np.unique(train * 16.0), np.arange(17))


def test_constant_feature_scales_to_zero_not_nan():
    data = make_synthetic_classification(100, 3, 2, seed=0)
    x = data.x.copy()
    x[:, 1] = 5.0
    fed = federate(dataclasses.replace(data, x=x), method="iid", num_clients=2)
    for client in fed.clients:
        assert np.isfinite(client.x_train).all()
        np.testing.assert_array_equal(client.x_train[:, 1], 0.0)


def test_same_seed_same_federation_other_seed_other(digits):
    a, b, c = (
        federate(digits, method="dirichlet", num_clients=4, alpha=0.5, seed=s) for s in (1, 1, 2)
    )
    for x, y in zip(a.clients, b.clients, strict=True):
        np.testing.assert_array_equal(x.x_train, y.x_train)
        np.testing.assert_array_equal(x.y_test, y.y_test)
    assert not np.array_equal(a.clients[0].y_train, c.clients[0].y_train)


def test_thousand_small_clients_are_fast():
    data = make_synthetic_classification(50_000, 20, 10, seed=0)
    start = time.perf_counter()
    fed = federate(data, method="dirichlet", num_clients=1000, alpha=0.5)
    assert time.perf_counter() - start < 1.0
    assert fed.num_clients == 1000 and all(c.y_train.size >= 1 for c in fed.clients)


@pytest.mark.parametrize("test_fraction", [-0.1, 1.0, 1.5])
def test_test_fraction_out_of_range_is_named(digits, test_fraction):
    with pytest.raises(
        ConfigError, match=rf"test_fraction must be in \[0, 1\) \(got {test_fraction}\)"
    ):
        federate(digits, method="iid", num_clients=2, test_fraction=test_fraction)


def test_site_method_on_a_dataset_without_sites_is_named(digits):
    with pytest.raises(ConfigError, match=r"partition method 'site' needs a data set with sites"):
        federate(digits, method="site", num_clients=2)
