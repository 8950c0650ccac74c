"""Two-party additive sharing (SecureML) against plaintext, on random inputs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from veil.errors import ConfigError
from veil.mpc import AdditiveProtocol, run_parties

values = arrays(np.float64, (3, 4), elements=st.floats(-100, 100))
TOLERANCE = 1e-3  # a few units of 2^-16 after each truncation


def product_tolerance(x, y):
    """Inputs are rounded to 2^-17, so a sum of products is off by up to Σ(|x| + |y|)·2^-17."""
    return (np.abs(x).sum() + np.abs(y).sum()) * 2.0**-17 + TOLERANCE


def products(protocol, x, y):
    mine = protocol.party.index
    shared_x = protocol.share(0, x if mine == 0 else None, x.shape)
    shared_y = protocol.share(1, y if mine == 1 else None, y.shape)
    return (
        (shared_x * shared_y).reveal(),
        (shared_x @ shared_y.T).reveal(),
        (shared_x + shared_y - 1.5 * shared_x + 2.0).reveal(),
        shared_x.sum(axis=1).dot(shared_y.sum(axis=1)).reveal(),
        (2.0 - shared_x[0]).reveal(to=1),
    )


@settings(max_examples=15, deadline=None)
@given(values, values)
def test_products_and_linear_operations_match_plaintext(run_shared, x, y):
    for at_party in run_shared(products, 2, x, y):
        mul, matmul, linear, dot, _ = at_party
        assert np.allclose(mul, x * y, atol=product_tolerance(x, y))
        assert np.allclose(matmul, x @ y.T, atol=product_tolerance(x, y))
        assert np.allclose(linear, x + y - 1.5 * x + 2.0, atol=TOLERANCE)
        assert np.isclose(dot, x.sum(1) @ y.sum(1), atol=4 * product_tolerance(x, y))


def test_reveal_to_one_party_leaves_the_other_without_it(run_shared):
    x = np.array([[1.0, 2.0, 3.0, 4.0]] * 3)
    first, second = (out[4] for out in run_shared(products, 2, x, x))
    assert first is None and np.allclose(second, 2.0 - x[0], atol=TOLERANCE)


def one_share_of(protocol, x):
    shared = protocol.share(0, x if protocol.party.index == 0 else None, x.shape)
    return shared.shares[0], shared.reveal()


def test_one_share_is_uniform_but_both_open_the_value(run_shared):
    x = np.full(4000, 3.25)
    (share0, opened0), (share1, opened1) = run_shared(one_share_of, 2, x)
    assert np.array_equal(opened0, x) and np.array_equal(opened1, x)
    for share in (share0, share1):  # either share alone: top bit a fair coin, values all distinct
        assert 0.45 < (share >> np.uint64(63)).mean() < 0.55 and len(np.unique(share)) == x.size


def test_integer_sharings_multiply_without_truncation(run_shared):
    def program(protocol):
        mine = protocol.party.index
        a = protocol.share(0, np.array([3, -4]) if mine == 0 else None, (2,), integer=True)
        b = protocol.share(1, np.array([-5, 6]) if mine == 1 else None, (2,), integer=True)
        return (a * b).reveal(), (a * 0.5).reveal()

    (product, half), _ = run_shared(program, 2)
    assert product.tolist() == [-15, -24] and np.allclose(half, [1.5, -2.0])


def test_bad_inputs_are_config_errors(run_shared):
    def wrong_shape(protocol):
        return protocol.share(0, np.zeros(3) if protocol.party.index == 0 else None, (4,))

    with pytest.raises(ConfigError, match=r"must give a value of shape \(4,\)"):
        run_shared(wrong_shape, 2)

    def no_triples(party):
        protocol = AdditiveProtocol(party, 16, None)
        x = protocol.constant(np.ones(2))
        return x * x

    with pytest.raises(ConfigError, match="no triple source"):
        run_parties(no_triples, [(), ()])

    def three_parties(party):
        return AdditiveProtocol(party, 16, None)

    with pytest.raises(ConfigError, match="additive sharing here is for 2 parties"):
        run_parties(three_parties, [(), (), ()])
    with pytest.raises(ConfigError, match=r"owners must be party indices 0\.\.1"):
        run_shared(lambda protocol: protocol.share(2, None, (1,)), 2)
