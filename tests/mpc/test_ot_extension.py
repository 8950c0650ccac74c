import numpy as np
import pytest

from veil.mpc import run_parties
from veil.mpc.ot_extension import CorrelatedOtReceiver, CorrelatedOtSender, bit_rows


def test_extended_correlated_ots_differ_by_delta_exactly_where_chosen():
    choices = [np.random.default_rng(k).integers(0, 2, n) for k, n in ((2, 1000), (3, 13))]

    def program(party):
        if party.index == 0:
            sender = CorrelatedOtSender(party, 1)
            return sender.delta, [sender.extend(len(c)) for c in choices]
        receiver = CorrelatedOtReceiver(party, 0)
        return [receiver.extend(c) for c in choices]

    (delta, zero), labels = (r.value for r in run_parties(program, [(), ()]))
    assert delta[0] & np.uint64(1)
    for q, t, c in zip(zero, labels, choices, strict=True):
        assert np.array_equal(t, q ^ (c.astype(np.uint64)[:, None] * delta))


@pytest.mark.parametrize("count", [1, 7, 8, 20, 63, 4096])
def test_bit_rows_transposes_a_bit_matrix(count):
    columns = np.random.default_rng(count).integers(0, 256, (128, (count + 7) // 8), np.uint8)
    rows = bit_rows(columns, count)
    bits = np.unpackbits(columns, axis=1, bitorder="little")[:, :count]
    assert rows.shape == (count, 2)
    row_bits = np.unpackbits(rows.view(np.uint8), axis=1, bitorder="little")
    assert np.array_equal(row_bits, bits.T)
