"""The vertical fraud split: partly overlapping customers, one split rule, train-only scaling."""

from __future__ import annotations

import numpy as np
import pytest

from veil.data.vertical import (
    BANK_FEATURES,
    PartyData,
    make_vertical_fraud,
    split_by_id,
    standardize,
)
from veil.errors import ConfigError


@pytest.fixture(scope="module")
def data():
    return make_vertical_fraud(num_shared=600, num_bank_only=150, num_partner_only=100, seed=3)


def test_sizes_and_partial_overlap(data):
    bank, partner = set(data.bank.ids), set(data.partner.ids)
    assert len(bank) == len(data.bank.ids) == 750 and len(partner) == len(data.partner.ids) == 700
    assert len(bank & partner) == 600
    assert len(bank - partner) == 150 and len(partner - bank) == 100


def test_columns_labels_and_dtypes(data):
    assert data.bank.feature_names == BANK_FEATURES and "distance_km" not in BANK_FEATURES
    assert data.partner.feature_names == ("distance_km", *(f"partner_signal_{j}" for j in range(8)))
    assert data.bank.x.shape == (750, 7) and data.partner.x.shape == (700, 9)
    assert data.bank.x.dtype == np.float64 and data.bank.y.dtype == np.int64
    assert data.partner.y is None
    assert set(np.unique(data.bank.y)) == {0, 1}


def test_rows_are_in_each_partys_own_order(data):
    shared = sorted(set(data.bank.ids) & set(data.partner.ids))
    assert not np.array_equal(data.bank.rows_of(shared), data.partner.rows_of(shared))


def test_shared_customers_are_on_the_same_side_of_the_split(data):
    shared = sorted(set(data.bank.ids) & set(data.partner.ids))
    bank_test = data.bank.is_test[data.bank.rows_of(shared)]
    np.testing.assert_array_equal(bank_test, data.partner.is_test[data.partner.rows_of(shared)])
    assert 0.15 < bank_test.mean() < 0.35


def test_scaling_is_fitted_on_training_rows_only(data):
    for party in (data.bank, data.partner):
        train = party.x[~party.is_test]
        np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-9)
        np.testing.assert_allclose(train.std(axis=0), 1.0, atol=1e-9)
        assert not np.allclose(party.x[party.is_test].mean(axis=0), 0.0, atol=1e-9)


def test_same_seed_same_tables_other_seed_other_tables():
    a, b = (make_vertical_fraud(num_shared=50, seed=1) for _ in range(2))
    assert a.bank.ids == b.bank.ids and np.array_equal(a.partner.x, b.partner.x)
    c = make_vertical_fraud(num_shared=50, seed=2)
    assert set(c.bank.ids) != set(a.bank.ids)


def test_partner_features_carry_signal_the_bank_lacks(data):
    shared = sorted(set(data.bank.ids) & set(data.partner.ids))
    y = data.bank.y[data.bank.rows_of(shared)]
    signal = data.partner.x[data.partner.rows_of(shared), 1]  # partner_signal_0
    assert signal[y == 1].mean() - signal[y == 0].mean() > 0.3


def test_rows_of_finds_rows_and_names_missing_ids(data):
    ids = list(data.bank.ids[5:8])
    np.testing.assert_array_equal(data.bank.rows_of(ids), [5, 6, 7])
    only_partner = next(i for i in data.partner.ids if i not in set(data.bank.ids))
    with pytest.raises(ConfigError, match=r"1 id\(s\) are not customers of the bank"):
        data.bank.rows_of([only_partner])


def test_split_by_id_is_a_salted_deterministic_rule():
    ids = [f"c{i}" for i in range(4000)]
    first = split_by_id(ids, 0.25, salt=0)
    np.testing.assert_array_equal(first, split_by_id(ids, 0.25, salt=0))
    assert abs(first.mean() - 0.25) < 0.03
    assert not np.array_equal(first, split_by_id(ids, 0.25, salt=1))
    with pytest.raises(ConfigError, match=r"test_fraction must be in \(0, 1\) \(got 1.0\)"):
        split_by_id(ids, 1.0, salt=0)


def test_standardize_uses_only_the_fit_rows():
    x = np.array([[1.0, 5.0], [3.0, 5.0], [100.0, -7.0]])
    fit = np.array([True, True, False])
    out = standardize(x, fit)
    np.testing.assert_allclose(out[:2], [[-1.0, 0.0], [1.0, 0.0]])
    assert out[2, 0] == pytest.approx(98.0)
    with pytest.raises(ConfigError, match="at least one row to fit"):
        standardize(x, np.zeros(3, dtype=bool))


def test_party_data_is_frozen(data):
    assert isinstance(data.bank, PartyData)
    with pytest.raises(AttributeError):
        data.bank.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_shared": 1}, r"num_shared must be >= 2 \(got 1\)"),
        ({"num_bank_only": -1}, r"num_bank_only must be >= 0 \(got -1\)"),
        ({"num_partner_only": -2}, r"num_partner_only must be >= 0 \(got -2\)"),
        ({"num_partner_signals": -1}, r"num_partner_signals must be >= 0 \(got -1\)"),
        ({"test_fraction": 0.0}, r"test_fraction must be in \(0, 1\) \(got 0.0\)"),
        ({"fraud_rate": 0.7}, r"fraud_rate must be in \(0, 0.5\) \(got 0.7\)"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_vertical_fraud(**kwargs)
