import numpy as np
import pytest

from veil.errors import ConfigError
from veil.mpc.nonlinear import (
    POLYNOMIAL_COEFFICIENTS,
    POLYNOMIAL_SCALE,
    SIGMOIDS,
    approximate_sigmoid,
    less_than,
    relu,
    sigmoid,
    sigmoid_error,
    sign_bit,
)

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
        sigmoid(x, "polynomial").reveal(),
    )


@pytest.mark.parametrize("parties", [2, 3])
def test_comparisons_relu_and_sigmoids_match_plaintext(run_shared, parties):
    for outputs in run_shared(program, parties):
        activation, slope, negative, below, taylor, piecewise, polynomial = outputs
        assert np.allclose(activation, np.maximum(VALUES, 0), atol=2e-5)
        assert np.array_equal(slope, VALUES >= 0) and np.array_equal(negative, VALUES < 0)
        assert np.array_equal(below, VALUES < 0.75)
        assert np.allclose(taylor, 0.5 + VALUES / 4, atol=1e-4)
        assert np.allclose(piecewise, np.clip(0.5 + VALUES / 4, 0, 1), atol=1e-4)
        assert np.allclose(polynomial, approximate_sigmoid(VALUES, "polynomial"), atol=1e-3)


@pytest.mark.parametrize("parties", [2, 3])
def test_a_public_scale_is_folded_into_each_sigmoid(run_shared, parties):
    scale = 0.8

    def scaled(protocol):
        x = protocol.share(0, VALUES if protocol.party.index == 0 else None, VALUES.shape)
        return [sigmoid(x, name, scale=scale).reveal() for name in SIGMOIDS]

    for outputs in run_shared(scaled, parties):
        for name, opened in zip(SIGMOIDS, outputs, strict=True):
            assert np.allclose(opened, scale * approximate_sigmoid(VALUES, name), atol=1e-3), name


def test_documented_sigmoid_errors():
    assert sigmoid_error("taylor") == pytest.approx(0.1192, abs=1e-4)
    assert sigmoid_error("piecewise", -50, 50) == pytest.approx(0.1192, abs=1e-4)
    assert sigmoid_error("taylor", -1, 1) == pytest.approx(0.0189, abs=1e-4)
    assert sigmoid_error("taylor", -8, 8) > 1  # unbounded off [-2, 2]
    assert sigmoid_error("polynomial") == pytest.approx(0.0471, abs=1e-4)
    assert sigmoid_error("polynomial", -8, 8) == pytest.approx(0.0611, abs=1e-4)
    assert SIGMOIDS == ("taylor", "piecewise", "polynomial")


def test_polynomial_is_the_least_squares_fit_and_overshoots_outside_its_range():
    z = np.linspace(-POLYNOMIAL_SCALE, POLYNOMIAL_SCALE, 4001)
    s = z / POLYNOMIAL_SCALE
    fit, *_ = np.linalg.lstsq(np.stack([s, s**3, s**5], 1), 1 / (1 + np.exp(-z)) - 0.5)
    assert np.allclose(POLYNOMIAL_COEFFICIENTS, fit, atol=1e-6)
    # past the range it leaves [0, 1] on the side that pushes an SGD step back towards it
    assert approximate_sigmoid(np.array(20.0), "polynomial") > 1
    assert approximate_sigmoid(np.array(-20.0), "polynomial") < 0
    assert np.allclose(approximate_sigmoid(z, "exact"), 1 / (1 + np.exp(-z)))


def test_bad_approximations_are_config_errors(run_shared):
    with pytest.raises(ConfigError, match=r"one of .*got 'cubic'"):
        sigmoid_error("cubic")
    with pytest.raises(ConfigError, match="low < high"):
        sigmoid_error("taylor", 1, 1)
    with pytest.raises(ConfigError, match="got 'probit'"):
        approximate_sigmoid(np.zeros(1), "probit")
    with pytest.raises(ConfigError, match="got 'tanh'"):
        run_shared(lambda protocol: sigmoid(protocol.constant(np.ones(1)), "tanh"), 2)
