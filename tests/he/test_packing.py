import numpy as np
import pytest

from veil.errors import ConfigError
from veil.he.packing import choose_layout, dequantize, pack, pack_big, quantize, unpack, unpack_big


def test_layout_two_16_bit_lanes_in_a_40_bit_slot_for_ten_clients():
    layout = choose_layout(40, max_clients=10, clip=1.0)
    assert (layout.value_bits, layout.lane_bits, layout.lanes, layout.max_clients) == (
        16,
        20,
        2,
        16,
    )
    assert layout.offset == 32767 and layout.scale == 32767.0


def test_quantization_is_unbiased_and_clipped():
    layout = choose_layout(40, 4, clip=1.0)
    rng = np.random.default_rng(0)
    x = np.full(100_000, 0.3 / layout.scale + 0.0)  # 0.3 of one step above zero
    q = quantize(x, layout, rng) - layout.offset
    assert set(np.unique(q)) == {0, 1} and q.mean() == pytest.approx(0.3, abs=0.01)
    big = quantize(np.array([5.0, -5.0]), layout, rng)
    assert big.tolist() == [2 * layout.offset, 0]


@pytest.mark.parametrize("big", [False, True])
def test_packed_sums_of_max_clients_decode_exactly(big):
    layout = choose_layout(40 if not big else 3070, max_clients=16, clip=1.0)
    rng = np.random.default_rng(1)
    values = [rng.integers(0, 2 * layout.offset + 1, 1000) for _ in range(layout.max_clients)]
    if big:
        slots = [pack_big(v, layout) for v in values]
        total = [sum(column) for column in zip(*slots, strict=True)]
        lanes = unpack_big(total, layout, 1000)
    else:
        total = sum(pack(v, layout, 64) for v in values)
        lanes = unpack(total, layout, 1000)
    assert np.array_equal(lanes, np.sum(values, axis=0))  # worst case: no carry between lanes


def test_dequantize_round_trip_within_one_step_per_client():
    layout = choose_layout(40, 8, clip=0.5)
    rng = np.random.default_rng(2)
    x = rng.uniform(-0.5, 0.5, (8, 500))
    lanes = sum(quantize(row, layout, rng) for row in x)
    assert np.abs(dequantize(lanes, layout, 8) - x.sum(0)).max() <= 8 / layout.scale


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((40, 10, 0.0), "clip must be > 0"),
        ((40, 0, 1.0), "max_clients must be ≥ 1"),
        ((10, 10, 1.0), "cannot hold one 16-bit value"),
        ((40, 10, 1.0, 40), r"value_bits must be in \[2, 32\]"),
        ((40, 10, 1.0, 16, 40000), "leave no room for noise"),
    ],
)
def test_bad_layouts(args, message):
    with pytest.raises(ConfigError, match=message):
        choose_layout(*args)
