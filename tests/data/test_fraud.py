"""The synthetic fraud data: imbalanced, shifted across banks, deterministic and learnable."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_selection import f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from veil.data import TRANSACTION_FEATURES, make_fraud
from veil.errors import ConfigError


@pytest.fixture(scope="module")
def fraud():
    return make_fraud()


def test_default_shape_sites_and_names(fraud):
    assert fraud.x.shape == (10_000, 16) and fraud.x.dtype == np.float32
    assert fraud.y.dtype == np.int64 and set(np.unique(fraud.y)) == {0, 1}
    assert fraud.num_classes == 2 and fraud.scaling == "standard"
    assert fraud.site_names == ("bank_0", "bank_1", "bank_2", "bank_3", "bank_4")
    assert fraud.sites.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(fraud.sites), [2000] * 5)


def test_transaction_features_have_their_documented_ranges(fraud):
    columns = dict(zip(TRANSACTION_FEATURES, fraud.x.T, strict=False))
    assert (columns["amount"] > 0).all()
    assert ((columns["hour"] >= 0) & (columns["hour"] <= 24)).all()
    assert ((columns["merchant_risk"] > 0) & (columns["merchant_risk"] < 1)).all()
    velocity = columns["velocity_24h"]
    assert (velocity >= 0).all() and (velocity == np.round(velocity)).all()
    assert set(np.unique(columns["card_present"])) == {0.0, 1.0}
    assert set(np.unique(columns["foreign"])) == {0.0, 1.0}
    assert (columns["account_age_days"] > 0).all()


def test_fraud_is_rare_and_every_bank_has_some(fraud):
    assert 0.015 < fraud.y.mean() < 0.06
    per_bank = np.array([fraud.y[fraud.sites == b].mean() for b in range(5)])
    assert (per_bank > 0).all()
    assert per_bank.max() > 1.2 * per_bank.min()  # banks see different fraud rates


def test_fraud_rate_follows_the_argument():
    assert make_fraud(fraud_rate=0.01).y.mean() < make_fraud(fraud_rate=0.2).y.mean()


def test_banks_have_shifted_feature_distributions(fraud):
    _, p_values = f_classif(fraud.x, fraud.sites)  # one-way ANOVA: does the bank shift the mean?
    assert (p_values < 1e-6).sum() >= 12


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = make_fraud(seed=5), make_fraud(seed=5), make_fraud(seed=6)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logistic_regression_learns_fraud_but_not_perfectly(seed):
    data = make_fraud(seed=seed)
    x_train, x_test, y_train, y_test = train_test_split(
        data.x, data.y, test_size=0.3, random_state=0, stratify=data.y
    )
    scaler = StandardScaler().fit(x_train)
    model = LogisticRegression(max_iter=1000).fit(scaler.transform(x_train), y_train)
    auc = roc_auc_score(y_test, model.predict_proba(scaler.transform(x_test))[:, 1])
    assert 0.85 < auc < 0.97


def test_sizes_follow_the_arguments():
    data = make_fraud(num_banks=3, rows_per_bank=50, num_features=8)
    assert data.x.shape == (150, 8) and data.feature_shape == (8,)
    assert data.site_names == ("bank_0", "bank_1", "bank_2")
    assert data.y.sum() >= 3  # at least one fraud per bank


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_banks": 0}, r"num_banks must be >= 1 \(got 0\)"),
        ({"rows_per_bank": 1}, r"rows_per_bank must be >= 2 \(got 1\)"),
        ({"fraud_rate": 0.0}, r"fraud_rate must be in \(0, 0.5\) \(got 0.0\)"),
        ({"fraud_rate": 0.5}, r"fraud_rate must be in \(0, 0.5\) \(got 0.5\)"),
        ({"num_features": 7}, r"num_features must be >= 8 \(got 7\)"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_fraud(**kwargs)
