import numpy as np
import pytest

from veil.errors import ConfigError
from veil.mpc.tensor import concatenate


def test_local_operations_follow_numpy(run_shared):
    x = np.arange(12.0).reshape(3, 4) / 4

    def program(protocol):
        shared = protocol.share(0, x if protocol.party.index == 0 else None, x.shape)
        joined = concatenate([shared, protocol.constant(np.ones((3, 1)))], axis=1)
        return (
            shared[1:].T.reveal(),
            shared.reshape(4, 3).sum(axis=0, keepdims=True).reveal(),
            (-shared + np.ones(4)).reveal(),
            joined.reveal(),
            (np.full(4, 2) * shared).reveal(),
            (np.eye(3) @ shared).reveal(),
            shared.shape,
            shared.ndim,
            len(shared),
            repr(shared),
        )

    for parties in (2, 3):
        for out in run_shared(program, parties):
            assert np.allclose(out[0], x[1:].T) and np.allclose(out[1], x.reshape(4, 3).sum(0))
            assert np.allclose(out[2], 1 - x) and np.allclose(out[3][:, 4], 1.0)
            assert np.allclose(out[4], 2 * x) and np.allclose(out[5], x)
            assert out[6:9] == ((3, 4), 2, 3) and "frac_bits=16" in out[9]


def test_integer_and_real_tensors_mix_by_lifting_the_integer(run_shared):
    def program(protocol):
        real = protocol.constant(np.array([0.5, 1.5]))
        integer = protocol.constant(np.array([2, 3]), integer=True)
        return (real + integer).reveal(), (integer - real).reveal(), (real - integer).frac_bits

    for parties in (2, 3):
        total, difference, bits = run_shared(program, parties)[0]
        assert np.allclose(total, [2.5, 4.5]) and np.allclose(difference, [1.5, 1.5]) and bits == 16


def test_mismatched_tensors_are_config_errors(run_shared):
    def different_scales(protocol):
        a = protocol.constant(np.ones(2))
        b = a.truncate(4)  # 12 fractional bits
        return a + b

    with pytest.raises(ConfigError, match="cannot add fixed-point tensors of 16 and 12"):
        run_shared(different_scales, 2)

    def bad_concatenation(protocol):
        return concatenate([protocol.constant(np.ones(2)), protocol.constant(np.ones(2), True)])

    with pytest.raises(ConfigError, match="one protocol and one fixed-point scale"):
        run_shared(bad_concatenation, 2)

    with pytest.raises(ConfigError, match=r"can truncate 0..16 bits \(got 17\)"):
        run_shared(lambda protocol: protocol.constant(np.ones(2)).truncate(17), 2)
