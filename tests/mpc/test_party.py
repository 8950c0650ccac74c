import numpy as np
import pytest

from veil.errors import ProtocolError
from veil.mpc.channel import FINISH, encode_frame, local_link_pair
from veil.mpc.party import OperationCost, Party


def two_parties(deadline=1.0):
    a, b = local_link_pair()
    return Party(0, 2, {1: a}, deadline), Party(1, 2, {0: b}, deadline)


def test_exchange_counts_rounds_and_bytes_per_operation():
    first, second = two_parties()
    with first.operation("mul"):
        first.send(1, np.arange(3, dtype=np.uint64))
    with second.operation("mul"):
        assert np.array_equal(second.receive(0, (3,)), [0, 1, 2])
    sent, received = first.costs["mul"], second.costs["mul"]
    assert sent.rounds == received.rounds == 1 and sent.calls == 1
    assert sent.bytes_sent == received.bytes_received > 24
    assert first.total().bytes_sent == sent.bytes_sent
    assert OperationCost(1, 2, 3, 4).as_dict() == {
        "calls": 1,
        "rounds": 2,
        "bytes_sent": 3,
        "bytes_received": 4,
    }


def test_a_replayed_or_skipped_message_is_refused():
    first, second = two_parties()
    first.links[1].send(encode_frame(5, np.zeros(2, np.uint64)))
    with pytest.raises(ProtocolError, match="sent message 5 where message 0 was due"):
        second.receive(0, (2,))


def test_a_mis_sized_or_mistyped_share_is_refused():
    first, second = two_parties()
    first.send(1, np.zeros(3, np.uint64))
    with pytest.raises(ProtocolError, match=r"shape \(3,\) where uint64 of shape \(4,\) was due"):
        second.receive(0, (4,))
    first.send(1, np.zeros(4, np.int64))
    with pytest.raises(ProtocolError, match="sent a int64 array"):
        second.receive(0, (4,))


def test_an_abort_reaches_the_peer_with_its_reason():
    first, second = two_parties()
    with second.operation("matmul"):
        first.abort("out of triples")
        with pytest.raises(ProtocolError, match="matmul: party 0 aborted: out of triples"):
            second.receive(0, (1,))


def test_silence_and_unknown_peers_are_errors():
    first, _ = two_parties(deadline=0.02)
    with pytest.raises(ProtocolError, match=r"within 0\.02 s"):
        first.receive(1, (1,))
    with pytest.raises(ProtocolError, match="no link to party 2"):
        first.send(2, np.zeros(1, np.uint64))


def test_finish_agrees_when_every_message_was_read_and_refuses_a_leftover():
    def closing(sequence, count):
        return encode_frame(sequence, np.array([count], np.uint64), kind=FINISH)

    first, second = two_parties()
    first.send(1, np.zeros(2, np.uint64))
    second.receive(0, (2,))
    first.links[1].send(closing(1, 1))
    second.finish()  # first's closing frame was already queued; second's waits for first
    assert second.costs["finish"].rounds == 1

    first, second = two_parties()
    first.send(1, np.array([7], np.uint64))  # a message second never reads
    first.links[1].send(closing(1, 1))
    with pytest.raises(ProtocolError, match="sent a share where its closing message was due"):
        second.finish()

    first, second = two_parties()
    first.links[1].send(closing(0, 3))
    with pytest.raises(ProtocolError, match="sent 3 messages where this party read 0"):
        second.finish()


def test_a_closing_frame_is_never_taken_for_a_share():
    """A peer that finishes one message early is caught even when the share due has the
    closing frame's shape."""
    first, second = two_parties()
    first.links[1].send(encode_frame(0, np.array([0], np.uint64), kind=FINISH))
    with pytest.raises(ProtocolError, match="sent its closing message where a share was due"):
        second.receive(0, (1,))
