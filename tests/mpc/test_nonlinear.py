import numpy as np
import pytest

from veil.errors import ConfigError
from veil.mpc.nonlinear import SIGMOIDS, less_than, relu, sigmoid, sigmoid_error, sign_bit

VALUES = np.concatenate([np.random.default_rng(6).normal(0, 3, 400), [0.0, -0.5, 1e-4, -1e-4]])


def program(protocol):
    x = protocol.share(0, VALUES if protocol.party.index == 0 else None, VALUES.shape)
    activation, slope = relu(x)
    return (
        activation.reveal(),
        slope.reveal(),
        sign_bit(x).reveal(),
        less_than(x, 0.75).reveal(),
        sigmoid(x, "taylor").reveal(),
        sigmoid(x, "piecewise").reveal(),
    )


@pytest.mark.parametrize("parties", [2, 3])
def test_comparisons_relu_and_sigmoids_match_plaintext(run_shared, parties):
    for activation, slope, negative, below, taylor, piecewise in run_shared(program, parties):
        assert np.allclose(activation, np.maximum(VALUES, 0), atol=2e-5)
        assert np.array_equal(slope, VALUES >= 0) and np.array_equal(negative, VALUES < 0)
        assert np.array_equal(below, VALUES < 0.75)
        assert np.allclose(taylor, 0.5 + VALUES / 4, atol=1e-4)
        assert np.allclose(piecewise, np.clip(0.5 + VALUES / 4, 0, 1), atol=1e-4)


def test_documented_sigmoid_errors():
    assert sigmoid_error("taylor") == pytest.approx(0.1192, abs=1e-4)
    assert sigmoid_error("piecewise", -50, 50) == pytest.approx(0.1192, abs=1e-4)
    assert sigmoid_error("taylor", -1, 1) == pytest.approx(0.0189, abs=1e-4)
    assert sigmoid_error("taylor", -8, 8) > 1  # unbounded off [-2, 2]
    assert SIGMOIDS == ("taylor", "piecewise")


def test_bad_approximations_are_config_errors(run_shared):
    with pytest.raises(ConfigError, match=r"one of .*got 'cubic'"):
        sigmoid_error("cubic")
    with pytest.raises(ConfigError, match="low < high"):
        sigmoid_error("taylor", 1, 1)
    with pytest.raises(ConfigError, match="got 'tanh'"):
        run_shared(lambda protocol: sigmoid(protocol.constant(np.ones(1)), "tanh"), 2)
