"""Half-gates garbling against plaintext evaluation: every gate type, and the comparison."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.errors import ConfigError, ProtocolError
from veil.mpc.circuits import CircuitBuilder, evaluate_plain, msb_of_sum
from veil.mpc.garbling import FixedKeyHash, evaluate, garble, permute_bits
from veil.mpc.ring import RingGenerator


def garbled_outputs(circuit, garbler_bits, evaluator_bits, first_gate=0):
    """Garble, hand the evaluator the labels of the inputs, evaluate, decode."""
    generator = RingGenerator()
    delta = generator.ring(2)
    delta[0] |= np.uint64(1)
    count = garbler_bits.shape[0]
    zero = generator.ring((circuit.num_inputs, count, 2))
    tables, output_zero = garble(circuit, delta, zero, first_gate)
    chosen = np.concatenate([garbler_bits, evaluator_bits], axis=1).T.astype(np.uint64)
    labels = zero ^ (chosen[..., None] * delta)
    output = evaluate(circuit, labels, tables, first_gate)
    assert np.all((output == output_zero) | (output == output_zero ^ delta))  # a valid label
    return (permute_bits(output) ^ permute_bits(output_zero)).T.astype(bool)


@pytest.mark.parametrize("gate", ["xor", "and", "not"])
def test_each_gate_matches_its_truth_table_on_random_inputs(gate):
    builder = CircuitBuilder(2, 2)
    a, b = builder.garbler_wires[0], builder.evaluator_wires[1]
    out = {"xor": builder.xor, "and": builder.and_}.get(gate, lambda x, _: builder.not_(x))(a, b)
    circuit = builder.build([out])
    rng = np.random.default_rng(1)
    left, right = rng.integers(0, 2, (500, 2)), rng.integers(0, 2, (500, 2))
    assert np.array_equal(
        garbled_outputs(circuit, left, right), evaluate_plain(circuit, left, right)
    )


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2**16 - 1), st.integers(0, 2**16 - 1)), min_size=1),
    st.integers(0, 2**40),
)
def test_garbled_comparison_circuit_matches_plaintext(pairs, first_gate):
    a, b = np.array(pairs).T
    width = 16
    left = ((a[:, None] >> np.arange(width)) & 1).astype(np.uint8)
    right = ((b[:, None] >> np.arange(width)) & 1).astype(np.uint8)
    circuit = msb_of_sum(width)
    assert np.array_equal(
        garbled_outputs(circuit, left, right, first_gate), evaluate_plain(circuit, left, right)
    )


def test_hash_depends_on_label_tweak_and_position():
    labels = RingGenerator().ring((3, 2))
    hashed = FixedKeyHash()(labels, np.uint64(0))
    assert not np.array_equal(hashed, FixedKeyHash()(labels, np.uint64(1)))
    same = np.repeat(labels[:1], 2, axis=0)
    assert not np.array_equal(*FixedKeyHash()(same, np.uint64(0)))  # position is in the tweak


def test_bad_delta_labels_and_tables_are_refused():
    circuit = msb_of_sum(4)
    zero = RingGenerator().ring((8, 3, 2))
    even = np.array([2, 5], np.uint64)
    with pytest.raises(ConfigError, match="lowest bit set"):
        garble(circuit, even, zero, 0)
    with pytest.raises(ConfigError, match=r"input labels must be \[8, N, 2\]"):
        garble(circuit, even | np.uint64(1), zero[:5], 0)
    with pytest.raises(ProtocolError, match="garbled tables of shape"):
        evaluate(circuit, zero, np.zeros((2, 2, 3, 2), np.uint64), 0)
