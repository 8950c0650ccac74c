import grpc
import pytest

from veil.errors import ConfigError, ProtocolError
from veil.runtime.grpc import veil_pb2 as pb
from veil.runtime.grpc.wire import Backoff, Limits, from_chunks, to_chunks, with_retries

SMALL = Limits(chunk_bytes=1024, max_message_bytes=4096)


def test_a_message_streams_in_chunks_and_reassembles():
    task = pb.Task(round=3, train=pb.Train(params=[pb.Tensor(name="w", data=b"x" * 3000)]))
    chunks = list(to_chunks(task, SMALL))
    assert len(chunks) == 3 and all(len(c.data) <= 1024 for c in chunks)
    assert from_chunks(iter(chunks), pb.Task, SMALL) == task


def test_an_empty_message_is_one_empty_chunk():
    chunks = list(to_chunks(pb.PushReply(), SMALL))
    assert [c.data for c in chunks] == [b""]
    assert from_chunks(chunks, pb.PushReply, SMALL) == pb.PushReply()


def test_an_oversized_message_is_refused_on_both_sides():
    big = pb.Reply(task_id=b"x" * 5000)
    with pytest.raises(ProtocolError, match="exceeds the limit of 4096"):
        list(to_chunks(big, SMALL))
    chunks = list(to_chunks(big, Limits(1024, 8192)))
    with pytest.raises(ProtocolError, match="Reply larger than the limit of 4096 bytes"):
        from_chunks(chunks, pb.Reply, SMALL)


def test_bytes_that_do_not_parse_are_refused():
    with pytest.raises(ProtocolError, match="malformed Reply: the bytes do not parse"):
        from_chunks([pb.Chunk(data=b"\xff\xff\xff")], pb.Reply, SMALL)


def test_limits_are_checked_and_set_grpc_frame_sizes():
    with pytest.raises(ConfigError, match="chunk size must be in"):
        Limits(chunk_bytes=100)
    with pytest.raises(ConfigError, match="chunk size must be in"):
        Limits(chunk_bytes=8192, max_message_bytes=4096)
    options = dict(SMALL.options())
    assert options["grpc.max_receive_message_length"] > 1024
    assert options["grpc.so_reuseport"] == 0


def test_backoff_delays_grow_to_the_maximum_with_jitter():
    delays = Backoff(initial=1.0, factor=2.0, maximum=3.0).delays()
    drawn = [next(delays) for _ in range(200)]
    assert 0 <= drawn[0] <= 1.0 and max(drawn) <= 3.0
    assert max(drawn[3:]) > 2.0  # later waits may reach the maximum
    assert len(set(drawn)) == len(drawn)  # jittered


class Failure(grpc.RpcError):
    def __init__(self, code):
        self._code = code

    def code(self):
        return self._code


FAST = Backoff(initial=0.001, maximum=0.002)


def test_retries_until_the_call_succeeds():
    calls, retried = [], []

    def call():
        calls.append(1)
        if len(calls) < 3:
            raise Failure(grpc.StatusCode.UNAVAILABLE)
        return "ok"

    assert with_retries(call, FAST, 10, lambda error, delay: retried.append(delay)) == "ok"
    assert len(calls) == 3 and len(retried) == 2


def test_gives_up_after_the_time_allowed():
    def call():
        raise Failure(grpc.StatusCode.DEADLINE_EXCEEDED)

    with pytest.raises(Failure):
        with_retries(call, FAST, give_up_after=0.05)


def test_other_errors_are_not_retried():
    calls = []

    def call():
        calls.append(1)
        raise Failure(grpc.StatusCode.PERMISSION_DENIED)

    with pytest.raises(Failure):
        with_retries(call, FAST, 10)
    assert calls == [1]
