import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.errors import ConfigError
from veil.mpc.circuits import CircuitBuilder, evaluate_plain, msb_of_sum


def bits(values, width):
    values = np.asarray(values, np.uint64)
    return ((values[:, None] >> np.arange(width, dtype=np.uint64)) & np.uint64(1)).astype(bool)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)), min_size=1))
def test_msb_of_sum_is_the_sign_of_the_wrapped_sum(pairs):
    a, b = np.array(pairs, np.uint64).T
    expected = ((a + b) >> np.uint64(63)).astype(bool)
    assert np.array_equal(evaluate_plain(msb_of_sum(64), bits(a, 64), bits(b, 64))[:, 0], expected)


def test_msb_of_sum_uses_one_and_gate_per_carry():
    assert msb_of_sum(64).and_count == 63 and msb_of_sum(8).num_inputs == 16


def test_single_gates_evaluate_to_their_truth_tables():
    builder = CircuitBuilder(1, 1)
    g, e = builder.garbler_wires[0], builder.evaluator_wires[0]
    circuit = builder.build([builder.xor(g, e), builder.and_(g, e), builder.not_(g)])
    left, right = np.array([[0], [0], [1], [1]]), np.array([[0], [1], [0], [1]])
    out = evaluate_plain(circuit, left, right)
    assert out.tolist() == [
        [False, False, True],
        [True, False, True],
        [True, False, False],
        [False, True, False],
    ]


def test_bad_circuits_and_inputs_are_config_errors():
    builder = CircuitBuilder(1, 1)
    with pytest.raises(ConfigError, match="gate input wire 5 does not exist yet"):
        builder.xor(0, 5)
    with pytest.raises(ConfigError, match="input counts must be >= 0"):
        CircuitBuilder(-1, 0)
    with pytest.raises(ConfigError, match="at least 2 bits"):
        msb_of_sum(1)
    with pytest.raises(ConfigError, match=r"inputs must be \[N, 4\] and \[N, 4\]"):
        evaluate_plain(msb_of_sum(4), np.zeros((2, 3)), np.zeros((2, 4)))
