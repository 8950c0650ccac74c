"""Fuzzing the coordinator: malformed, truncated, oversized and wrong-round replies from an
admitted site, while honest sites train. Every bad reply must be answered INVALID_ARGUMENT with
a reason, and every round must still complete with the honest sites."""

import json
import logging
import os
import threading
import time

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.config import parse_config
from veil.runtime.certs import init_authority, issue_site, site_credentials
from veil.runtime.grpc import veil_pb2 as pb
from veil.runtime.grpc import veil_pb2_grpc as rpc
from veil.runtime.grpc.loopback import loopback
from veil.runtime.grpc.wire import SESSION_KEY, Limits, channel_credentials, from_chunks, to_chunks

LIMITS = Limits(chunk_bytes=4096, max_message_bytes=32 * 1024)
ATTACKER = "client_3"


def config(rounds: int):
    return parse_config(
        {
            "partition": {"method": "iid", "num_clients": 4},
            "federation": {"rounds": rounds},
            "client": {"local_steps": 1, "batch_size": 16},
            "deployment": {
                "poll_seconds": 0.2,
                "round_timeout": 20,
                "chunk_bytes": LIMITS.chunk_bytes,
                "max_message_bytes": LIMITS.max_message_bytes,
            },
        }
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("certs")
    init_authority(folder)
    for i in range(4):
        issue_site(folder, f"client_{i}")
    return folder


@pytest.fixture(autouse=True)
def _no_report(monkeypatch):
    monkeypatch.setattr("veil.runtime.grpc.coordinator.write_report", lambda *args: None)


class Attacker:
    """An admitted site (valid certificate) that sends garbage."""

    def __init__(self, address, certs):
        credentials = channel_credentials(site_credentials(certs, ATTACKER))
        self.channel = grpc.secure_channel(address, credentials, LIMITS.options())
        self.stub = rpc.CoordinatorStub(self.channel)
        joined = self.stub.Join(pb.JoinRequest(site=ATTACKER, identity_key=os.urandom(32)))
        self.metadata = ((SESSION_KEY, joined.session),)
        self.answers: list[tuple[grpc.StatusCode, str]] = []

    def push(self, chunks) -> tuple[grpc.StatusCode, str]:
        try:
            self.stub.Push(chunks, metadata=self.metadata, timeout=10)
            answer = (grpc.StatusCode.OK, "")
        except grpc.RpcError as error:
            answer = (error.code(), error.details())
        self.answers.append(answer)
        return answer

    def push_bytes(self, data: bytes) -> tuple[grpc.StatusCode, str]:
        size = LIMITS.chunk_bytes
        chunks = [pb.Chunk(data=data[i : i + size]) for i in range(0, max(len(data), 1), size)]
        return self.push(iter(chunks))

    def misbehave_on_own_tasks(self, stop: threading.Event) -> None:
        """Pull this site's real tasks, answer each wrongly in every way, then refuse it (so
        the rounds need not wait for the deadline)."""
        while not stop.is_set():
            try:
                chunks = self.stub.Pull(pb.PullRequest(), metadata=self.metadata, timeout=5)
                task = from_chunks(chunks, pb.Task, LIMITS)
            except grpc.RpcError:
                return
            if task.HasField("finish"):
                return
            if task.HasField("train"):
                for reply in wrong_answers(task):
                    self.push_bytes(reply)
                refusal = pb.Reply(task_id=task.task_id, round=task.round)
                refusal.refusal.reason = "not today"
                assert self.push(to_chunks(refusal, LIMITS))[0] == grpc.StatusCode.OK


def wrong_answers(task: pb.Task) -> list[bytes]:
    """Replies to a real open task that the coordinator must refuse."""

    def reply(**fields) -> pb.Reply:
        return pb.Reply(task_id=task.task_id, round=task.round, **fields)

    def train(tensors, rows=10) -> pb.Reply:
        return reply(train=pb.TrainResult(num_rows=rows, plain=pb.PlainUpdate(deltas=tensors)))

    honest = [
        pb.Tensor(name=t.name, dtype=t.dtype, shape=t.shape, data=bytes(len(t.data)))
        for t in task.train.params
    ]
    nan = np.full(len(honest[0].data) // 4, np.nan, np.float32).tobytes()
    bad = [
        pb.Reply(task_id=task.task_id, round=task.round + 1, train=train(honest).train),  # round
        reply(secagg=pb.SecAggMessage()),  # wrong kind
        train(honest[1:]),  # a tensor missing
        train([pb.Tensor(name=honest[0].name, dtype="<f4", shape=[1], data=bytes(4)), *honest[1:]]),
        train(
            [
                pb.Tensor(name=honest[0].name, dtype="<f4", shape=honest[0].shape, data=nan),
                *honest[1:],
            ]
        ),
        train(honest, rows=0),
        reply(train=pb.TrainResult(num_rows=1, ring=pb.RingHeld())),  # not this run's encoder
    ]
    data = [r.SerializeToString() for r in bad]
    whole = train(honest).SerializeToString()
    return [*data, whole[: len(whole) // 2], whole[:-3]]  # truncated in transit


def replies():
    """Hypothesis: random bytes, structured replies to tasks never issued (maybe truncated or
    bit-flipped), and oversized messages."""
    tensor = st.builds(
        pb.Tensor,
        name=st.text(max_size=8),
        dtype=st.sampled_from(["<f4", "<f8", "|O", "<u4", ">f4", ""]),
        shape=st.lists(st.integers(-2, 40), max_size=4),
        data=st.binary(max_size=256),
    )
    structured = st.builds(
        lambda task_id, round_index, tensors, rows: pb.Reply(
            task_id=task_id,
            round=round_index,
            train=pb.TrainResult(num_rows=rows, plain=pb.PlainUpdate(deltas=tensors)),
        ).SerializeToString(),
        st.binary(min_size=0, max_size=24),
        st.integers(0, 2**32 - 1),
        st.lists(tensor, max_size=3),
        st.integers(0, 2**64 - 1),
    )
    mangled = st.tuples(structured, st.integers(0, 10_000), st.integers(0, 255)).map(
        lambda t: t[0][: t[1] % (len(t[0]) + 1)] + bytes([t[2]])
    )
    oversized = st.integers(LIMITS.max_message_bytes + 1, 2 * LIMITS.max_message_bytes).map(
        lambda n: os.urandom(n)
    )
    return st.one_of(st.binary(max_size=2048), structured, mangled, oversized)


def expected_refusal(code: grpc.StatusCode, details: str) -> bool:
    return code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("refused reply: ")


def test_fuzzed_replies_are_refused_while_honest_sites_train(tmp_path, certs, caplog):
    result: dict = {}
    stop = threading.Event()  # the honest run goes on until the fuzzing is over
    with (
        caplog.at_level(logging.INFO, logger="veil.server"),
        loopback(config(10**6), tmp_path, certs, stop=stop, result=result) as running,
    ):
        attacker = Attacker(running.address, certs)
        own = threading.Thread(target=attacker.misbehave_on_own_tasks, args=(stop,))
        own.start()
        for name in ("client_0", "client_1", "client_2"):
            running.start_site(name)

        @settings(
            max_examples=60,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(replies())
        def fuzz(data):
            code, details = attacker.push_bytes(data)
            assert expected_refusal(code, details), (code, details)

        fuzz()
        while _rounds_done(tmp_path) < 2:  # the attacker misbehaves on real tasks too
            time.sleep(0.1)
        stop.set()
    own.join()
    metrics = result["metrics"]
    rounds = metrics["final"]["rounds"]
    assert rounds >= 2 and metrics["final"]["stopped"] == "stopped on request"
    for r in range(1, rounds + 1):  # every round: the three honest sites, the attacker dropped
        assert f"round {r}: 3 of 4 sampled sites sent an update (dropped: client_3)" in caplog.text
    refusals = [a for a in attacker.answers if a[0] != grpc.StatusCode.OK]
    assert len(refusals) >= 60 + 9 * rounds
    assert all(expected_refusal(*a) for a in refusals), {a for a in refusals}
    reasons = " | ".join(d for _, d in refusals)
    for reason in (
        "round 2 to a task of round 1",
        "expected a training result",
        "missing tensors",
        "has shape (1,)",
        "NaN or infinite",
        "num_rows must be in",
        "this run's encoder sends plain updates, got ring",
        "do not parse",
        "larger than the limit",
        "not open",
    ):
        assert reason in reasons


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_hundred_thousand_fuzzed_messages_are_all_answered(tmp_path, certs):
    """Benchmark-style: 100,000 fuzzed replies (seeded generator) against a coordinator that is
    running rounds with honest sites at the same time (at most two rounds a second, like a
    deployment's pace rather than a simulator's); prints messages per second."""
    count = int(os.environ.get("VEIL_FUZZ_MESSAGES", 100_000))
    rng = np.random.default_rng(0)
    result: dict = {}
    stop = threading.Event()
    pace = lambda record: time.sleep(0.5)  # noqa: E731
    with loopback(config(10**6), tmp_path, certs, stop, result, pace) as running:
        attacker = Attacker(running.address, certs)
        own = threading.Thread(target=attacker.misbehave_on_own_tasks, args=(stop,))
        own.start()
        for name in ("client_0", "client_1", "client_2"):
            running.start_site(name)
        time.sleep(2)
        before = _rounds_done(tmp_path)
        started = time.perf_counter()
        for i in range(count):
            code, details = attacker.push_bytes(_fuzzed(rng, i))
            assert expected_refusal(code, details), (i, code, details)
        seconds = time.perf_counter() - started
        during = _rounds_done(tmp_path) - before
        stop.set()
    own.join()
    print(
        f"\n{count} fuzzed messages in {seconds:.1f} s: {count / seconds:.0f} messages/s, "
        f"all answered INVALID_ARGUMENT; {during} honest rounds completed meanwhile"
    )
    assert during > 0 and result["metrics"]["final"]["stopped"] == "stopped on request"


def _rounds_done(out) -> int:
    return len(json.loads((out / "metrics.json").read_text())["rounds"])


def _fuzzed(rng: np.random.Generator, i: int) -> bytes:
    kind = i % 4
    if kind == 0:  # random bytes
        return rng.bytes(int(rng.integers(0, 2048)))
    if i % 100 == 3:  # 1 in 100 oversized (they are slow to send)
        return rng.bytes(LIMITS.max_message_bytes + 1 + int(rng.integers(0, 1000)))
    tensor = pb.Tensor(
        name="0.weight",
        dtype=str(rng.choice(["<f4", "<f8", "|O", ">f4"])),
        shape=[int(n) for n in rng.integers(-1, 40, size=rng.integers(0, 3))],
        data=rng.bytes(int(rng.integers(0, 512))),
    )
    reply = pb.Reply(
        task_id=rng.bytes(16),
        round=int(rng.integers(0, 2**32)),
        train=pb.TrainResult(
            num_rows=int(rng.integers(0, 100)), plain=pb.PlainUpdate(deltas=[tensor])
        ),
    ).SerializeToString()
    if kind == 1:  # wrong round / never-issued task
        return reply
    cut = int(rng.integers(0, len(reply) + 1))  # truncated, with a flipped byte
    return reply[:cut] + bytes([int(rng.integers(0, 256))])
