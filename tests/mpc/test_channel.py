import struct

import numpy as np
import pytest

from veil.errors import ProtocolError
from veil.mpc.channel import (
    ABORT,
    DATA,
    FINISH,
    HEADER,
    MAX_FRAME_BYTES,
    decode_frame,
    encode_frame,
    frame_length,
    local_link_pair,
)


@pytest.mark.parametrize("dtype", [np.uint64, np.uint8, np.int64])
def test_frames_carry_arrays_and_sequence_numbers(dtype):
    array = np.arange(12, dtype=dtype).reshape(3, 4)
    frame = decode_frame(encode_frame(7, array))
    assert frame.kind == DATA and frame.sequence == 7
    assert frame.array.dtype == dtype and np.array_equal(frame.array, array)


def test_abort_frames_carry_the_reason():
    frame = decode_frame(encode_frame(3, reason="bad share"))
    assert frame.kind == ABORT and frame.reason == "bad share"


def test_malformed_frames_are_refused():
    good = encode_frame(0, np.zeros(4, np.uint64))
    with pytest.raises(ProtocolError, match="not a veil MPC frame"):
        decode_frame(b"XX" + good[2:])
    with pytest.raises(ProtocolError, match="truncated or padded"):
        decode_frame(good[:-1])
    with pytest.raises(ProtocolError, match="cannot send an array of dtype float64"):
        encode_frame(0, np.zeros(2))
    huge = HEADER.pack(b"VM", 1, DATA, 0, 1, 0, MAX_FRAME_BYTES)
    with pytest.raises(ProtocolError, match="above the"):
        frame_length(huge)
    # a shape whose element count wraps around in 64-bit integers, with an empty payload
    wrapped = HEADER.pack(b"VM", 1, DATA, 0, 1, 2, 0) + struct.pack("<2Q", 2**32, 2**32)
    with pytest.raises(ProtocolError, match="malformed frame"):
        decode_frame(wrapped)
    with pytest.raises(ProtocolError, match="data or finish frame"):
        encode_frame(0, np.zeros(1, np.uint64), kind=ABORT)


def test_closing_frames_carry_their_count():
    frame = decode_frame(encode_frame(4, np.array([4], np.uint64), kind=FINISH))
    assert frame.kind == FINISH and frame.array.tolist() == [4]


def test_local_links_deliver_in_order_and_report_departure_and_silence():
    a, b = local_link_pair()
    a.send(b"one")
    a.send(b"two")
    assert b.receive(1.0) == b"one" and b.receive(1.0) == b"two"
    with pytest.raises(ProtocolError, match=r"no message from the peer within 0\.01 s"):
        b.receive(0.01)
    a.close()
    for _ in range(2):
        with pytest.raises(ProtocolError, match="peer disconnected"):
            b.receive(1.0)
