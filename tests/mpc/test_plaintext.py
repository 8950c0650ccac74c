import numpy as np
import pytest

from veil.config import DataConfig
from veil.errors import ConfigError
from veil.mpc.config import MpcConfig
from veil.mpc.experiment import prepare_parties
from veil.mpc.plaintext import batch_order, design_matrix, initial_weights, logits, train_plaintext


def test_initial_weights_follow_the_seed_and_the_model():
    (w,) = initial_weights("logistic", 5, 0, seed=0)
    assert w.shape == (6, 1) and not w.any()
    first, second = initial_weights("mlp", 5, 3, seed=1)
    assert first.shape == (6, 3) and second.shape == (4, 1)
    assert np.array_equal(first, initial_weights("mlp", 5, 3, seed=1)[0])
    assert np.abs(first).max() <= 1 / np.sqrt(5)


def test_batches_cover_every_row_once_per_epoch():
    epochs = list(batch_order(10, 4, 2, seed=0))
    assert [len(b) for b in epochs[0]] == [4, 4, 2]
    for epoch in epochs:
        assert sorted(np.concatenate(epoch)) == list(range(10))
    assert not np.array_equal(np.concatenate(epochs[0]), np.concatenate(epochs[1]))


def test_plaintext_training_learns_a_separable_problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    for model in ("logistic", "mlp"):
        for sigmoid in ("exact", "piecewise", "taylor", "polynomial"):
            weights = train_plaintext(
                model,
                x,
                y,
                hidden=4,
                epochs=5,
                batch_size=16,
                learning_rate=0.5,
                seed=0,
                sigmoid=sigmoid,
            )
            assert np.mean((logits(weights, x) > 0) == y) > 0.9
    assert np.array_equal(design_matrix(np.zeros((2, 1))), [[1, 0], [1, 0]])


def test_bad_models_are_config_errors():
    with pytest.raises(ConfigError, match="model must be one of"):
        initial_weights("svm", 3, 0, 0)
    with pytest.raises(ConfigError, match="hidden must be >= 1"):
        initial_weights("mlp", 3, 0, 0)
    with pytest.raises(ConfigError, match="sigmoid must be exact or one of"):
        train_plaintext(
            "logistic",
            np.zeros((2, 1)),
            np.zeros(2),
            hidden=0,
            epochs=1,
            batch_size=1,
            learning_rate=0.1,
            seed=0,
            sigmoid="probit",
        )


def test_polynomial_sigmoid_stays_stable_where_the_taylor_line_loses_accuracy():
    _, _, (x, y, x_test, y_test) = prepare_parties(MpcConfig(), DataConfig(), 0)
    sgd = {"hidden": 0, "epochs": 10, "batch_size": 32, "learning_rate": 0.1, "seed": 0}
    accuracy = {
        name: np.mean(
            (logits(train_plaintext("logistic", x, y, sigmoid=name, **sgd), x_test) > 0) == y_test
        )
        for name in ("exact", "polynomial", "taylor")
    }
    assert abs(accuracy["polynomial"] - accuracy["exact"]) <= 0.01
    assert accuracy["exact"] - accuracy["taylor"] > 0.01
