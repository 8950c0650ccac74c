import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.errors import ConfigError
from veil.mpc.ring import RingGenerator, decode, encode
from veil.mpc.truncation import truncate_pair_share, truncation_failure_probability


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1000, 1000), min_size=1, max_size=50), st.integers(4, 15))
def test_local_truncation_is_within_one_unit_of_the_true_quotient(values, bits):
    x = encode(np.array(values), 2 * bits)
    share0 = RingGenerator().ring(x.shape)
    share1 = x - share0
    truncated = truncate_pair_share(share0, bits, 0) + truncate_pair_share(share1, bits, 1)
    assert np.all(
        np.abs(decode(truncated, bits) - np.array(values)) <= 2.0**-bits + 2.0 ** -(2 * bits)
    )


def test_failure_probability_bound_and_role_check():
    assert truncation_failure_probability(37) == 2.0**-26
    assert truncation_failure_probability(70) == 1.0
    with pytest.raises(ConfigError, match="role must be 0 or 1"):
        truncate_pair_share(np.zeros(2, np.uint64), 4, 2)
