"""The Dataset container validates itself on construction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from veil.data import Dataset
from veil.errors import ConfigError


def _table(**changes) -> Dataset:
    fields = dict(
        name="table",
        x=np.zeros((4, 3), dtype=np.float32),
        y=np.array([0, 1, 0, 1], dtype=np.int64),
        num_classes=2,
        feature_shape=(3,),
        scaling="standard",
        pixel_max=None,
        sites=None,
        site_names=None,
    )
    return Dataset(**{**fields, **changes})


def test_a_valid_dataset_reports_its_rows():
    assert _table().num_rows == 4


def test_sites_are_accepted_with_their_names():
    data = _table(sites=np.array([0, 0, 1, 1]), site_names=("a", "b"))
    assert data.site_names == ("a", "b")


def test_dataset_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _table().name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"x": np.zeros((4, 3))}, r"Dataset.x must be float32 \(got float64\)"),
        ({"y": np.array([0, 1, 0, 1], dtype=np.int32)}, r"Dataset.y must be int64 \(got int32\)"),
        ({"feature_shape": (4,)}, r"Dataset.x must have shape \[n, \*\(4,\)\] \(got \(4, 3\)\)"),
        ({"y": np.array([0, 1, 0], dtype=np.int64)}, r"Dataset.y must have shape \[4\]"),
        ({"num_classes": 0}, r"Dataset.num_classes must be >= 1 \(got 0\)"),
        ({"y": np.array([0, 1, 2, 1], dtype=np.int64)}, r"Dataset.y must lie in 0..1"),
        ({"scaling": "minmax"}, r"Dataset.scaling must be one of .* \(got 'minmax'\)"),
        ({"scaling": "fixed"}, r"Dataset.pixel_max must be > 0 .* \(got None\)"),
        ({"sites": np.zeros(4, dtype=np.int64)}, r"sites and Dataset.site_names must be given"),
        (
            {"sites": np.zeros(4, dtype=np.int32), "site_names": ("a",)},
            r"Dataset.sites must be int64 of shape \(4,\)",
        ),
        (
            {"sites": np.array([0, 1, 2, 0]), "site_names": ("a", "b")},
            r"Dataset.sites must lie in 0..1",
        ),
    ],
)
def test_invalid_fields_are_named_in_the_error(changes, message):
    with pytest.raises(ConfigError, match=message):
        _table(**changes)
