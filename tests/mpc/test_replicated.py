"""Three-party replicated sharing (ABY3) against plaintext, on random inputs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from veil.errors import ConfigError
from veil.mpc import ReplicatedProtocol, run_parties
from veil.mpc.ring import encode

values = arrays(np.float64, (4, 3), elements=st.floats(-100, 100))


def tolerance(x, y):
    return (np.abs(x).sum() + np.abs(y).sum()) * 2.0**-17 + 1e-3


def program(protocol, x, y):
    shares = protocol.share_each(
        {0: x.shape, 2: y.shape}, {0: x, 1: None, 2: y}[protocol.party.index]
    )
    a, b = shares[0], shares[2]
    return (a * b).reveal(), (a.T @ b).reveal(), (a - b * 0.5 + 1.0).reveal(), (a * 0.125).reveal()


@settings(max_examples=15, deadline=None)
@given(values, values)
def test_products_truncation_and_linear_operations_match_plaintext(run_shared, x, y):
    for mul, matmul, linear, scaled in run_shared(program, 3, x, y):
        assert np.allclose(mul, x * y, atol=tolerance(x, y))
        assert np.allclose(matmul, x.T @ y, atol=tolerance(x, y))
        assert np.allclose(linear, x - 0.5 * y + 1.0, atol=1e-3)
        assert np.allclose(scaled, x / 8, atol=1e-4)


def test_zero_shares_sum_to_zero_and_each_party_holds_two_of_three_components(run_shared):
    def zeros_and_components(protocol):
        shared = protocol.share(1, np.arange(4.0) if protocol.party.index == 1 else None, (4,))
        return protocol.zero_share((5,)), shared.shares

    outputs = run_shared(zeros_and_components, 3)
    assert np.array_equal(sum(z for z, _ in outputs), np.zeros(5, np.uint64))
    for i, (_, (own, _)) in enumerate(outputs):
        assert np.array_equal(own, outputs[(i - 1) % 3][1][1])  # party i-1's second is xᵢ
    total = sum(outputs[i][1][0] for i in range(3))
    assert np.array_equal(total.view(np.int64), np.arange(4) * 2**16)


def test_a_single_party_sees_uniform_components(run_shared):
    def components(protocol):
        shared = protocol.share(
            0, np.full(4000, 7.5) if protocol.party.index == 0 else None, (4000,)
        )
        return shared.shares

    for own, following in run_shared(components, 3)[1:]:
        for component in (own, following):
            assert 0.45 < (component >> np.uint64(63)).mean() < 0.55


def test_replicated_sharing_needs_three_parties():
    with pytest.raises(ConfigError, match="replicated sharing is for 3 parties"):
        run_parties(lambda party: ReplicatedProtocol(party, 16), [(), ()])


def test_a_product_with_truncation_is_one_round_and_unbiased(run_shared, rng):
    """Party 2 deals the truncation pair and hears nothing; the result is the exact product
    rounded stochastically: within one unit in the last place, and unbiased."""
    x, y = rng.normal(0, 4, 20_000), rng.normal(0, 4, 20_000)

    def program(protocol):
        shares = protocol.share_each(
            {0: x.shape, 1: y.shape}, {0: x, 1: y, 2: None}[protocol.party.index]
        )
        product = (shares[0] * shares[1]).reveal()
        mul = protocol.party.costs["mul"]
        return product, mul.rounds, mul.bytes_received

    outputs = run_shared(program, 3)
    exact = encode(x, 16).view(np.int64).astype(object) * encode(y, 16).view(np.int64)
    units = (outputs[0][0] * 2**16).round().astype(np.int64) - np.array(
        [value / 2**16 for value in exact]
    )
    assert np.all(np.abs(units) <= 1)
    assert abs(units.mean()) < 0.02  # floor would give −0.5
    assert [rounds for _, rounds, _ in outputs] == [1, 1, 1] and outputs[2][2] == 0


def test_halvings_ride_on_the_truncation_of_a_product(run_shared):
    values = np.linspace(-3, 3, 12).reshape(3, 4)

    def program(protocol):
        x = protocol.share(0, values if protocol.party.index == 0 else None, values.shape)
        rounds = protocol.party.total().rounds
        halved = x.mul(x, halvings=3), x.T.matmul(x, halvings=6)
        rounds = protocol.party.total().rounds - rounds
        with pytest.raises(ConfigError, match="halved only when it is truncated anyway"):
            x.mul(protocol.constant(np.ones((3, 4), np.int64), integer=True), halvings=1)
        with pytest.raises(ConfigError, match="halved only"):
            x.mul(x, halvings=-1)
        return [h.reveal() for h in halved], rounds

    for parties in (2, 3):
        for (mul, matmul), rounds in run_shared(program, parties):
            assert np.allclose(mul, values * values / 8, atol=1e-4)
            assert np.allclose(matmul, values.T @ values / 64, atol=1e-4)
            assert rounds == 2
