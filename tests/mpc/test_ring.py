import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.errors import ConfigError
from veil.mpc.ring import RingGenerator, decode, encode, to_signed

reals = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(st.lists(reals, min_size=1, max_size=20), st.integers(0, 30))
def test_encode_then_decode_is_within_half_a_unit(values, frac_bits):
    values = np.array(values)
    assert np.all(
        np.abs(decode(encode(values, frac_bits), frac_bits) - values) <= 2.0 ** -(frac_bits + 1)
    )


def test_ring_arithmetic_wraps_like_signed_integers():
    a, b = encode(np.array([-3.5, 2.25]), 8), encode(np.array([1.5, -4.0]), 8)
    assert np.array_equal(decode(a + b, 8), [-2.0, -1.75])
    assert np.array_equal(decode(a * b, 16), [-5.25, -9.0])
    assert np.array_equal(to_signed(np.array([2**64 - 1], np.uint64)), [-1])


def test_encode_refuses_values_that_would_wrap():
    with pytest.raises(ConfigError, match="cannot encode values beyond"):
        encode(np.array([2.0**50]), 16)
    with pytest.raises(ConfigError, match="non-finite"):
        encode(np.array([np.nan]), 16)
    with pytest.raises(ConfigError, match=r"fractional bits must be in 0\.\.30"):
        encode(1.0, 31)


def test_generator_streams_repeat_for_one_key_and_differ_otherwise():
    key = bytes(range(16))
    assert np.array_equal(RingGenerator(key).ring(5), RingGenerator(key).ring(5))
    assert not np.array_equal(RingGenerator(key).ring(5), RingGenerator(key, stream=1).ring(5))
    assert not np.array_equal(RingGenerator().ring(5), RingGenerator().ring(5))
    with pytest.raises(ConfigError, match="key is 16 bytes"):
        RingGenerator(b"short")


def test_generator_is_uniform_enough_and_below_respects_the_bound():
    top_bits = RingGenerator().ring(20_000) >> np.uint64(63)
    assert 0.47 < top_bits.mean() < 0.53
    values = RingGenerator().below(1000, 500)
    assert min(values) >= 0 and max(values) < 1000 and len(set(values)) > 300
