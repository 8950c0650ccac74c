"""Three-party replicated sharing (ABY3) against plaintext, on random inputs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from veil.errors import ConfigError
from veil.mpc import ReplicatedProtocol, run_parties

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
