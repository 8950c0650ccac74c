import numpy as np

from veil.mpc.conversion import bits_to_arithmetic, msb_xor_shares
from veil.mpc.ring import encode


def test_garbled_sign_bits_are_xor_shared_and_convert_to_arithmetic(run_shared):
    values = np.concatenate(
        [np.random.default_rng(5).normal(0, 100, 997), [0.0, -(2.0**-16), 2.0**-16, -1e9, 1e9]]
    )

    def program(protocol):
        x = protocol.share(0, values if protocol.party.index == 0 else None, values.shape)
        bits = msb_xor_shares(protocol.party, protocol.additive_pair(x))
        again = msb_xor_shares(protocol.party, protocol.additive_pair(x))  # a second batch
        return bits, again, bits_to_arithmetic(protocol, bits, values.shape).reveal()

    for parties in (2, 3):
        outputs = run_shared(program, parties)
        sign = encode(values, 16).view(np.int64) < 0
        first, second = outputs[0][0] ^ outputs[1][0], outputs[0][1] ^ outputs[1][1]
        assert np.array_equal(first.astype(bool), sign) and np.array_equal(first, second)
        assert 0.3 < outputs[0][0].mean() < 0.7  # one share alone is a coin toss
        assert all(np.array_equal(out[2], sign.astype(np.int64)) for out in outputs)
        if parties == 3:
            assert outputs[2][0] is None
