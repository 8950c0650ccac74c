import threading
import time

import pytest

from veil.errors import ProtocolError
from veil.runtime.grpc import veil_pb2 as pb
from veil.runtime.grpc.board import TaskBoard, UnknownSession


def accept(reply):
    """A task's check: the reply's round (None for a refusal: the site dropped)."""
    return None if reply.HasField("refusal") else reply.round


def train_task(round_index=1):
    return pb.Task(round=round_index, train=pb.Train())


def answer_in_background(board, token, refuse=False):
    def work():
        task = board.next_task(token, timeout=5)
        reply = pb.Reply(task_id=task.task_id, round=task.round)
        if refuse:
            reply.refusal.reason = "no"
        board.answer(token, reply)

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_a_task_goes_to_its_site_and_its_answer_comes_back():
    board = TaskBoard(3)
    tokens = {site: board.join(site, bytes([site]) * 32) for site in (0, 2)}
    workers = [answer_in_background(board, t) for t in tokens.values()]
    answers = board.exchange({0: (train_task(), accept), 2: (train_task(), accept)}, timeout=5)
    for w in workers:
        w.join()
    assert answers == {0: 1, 2: 1}
    assert board.identities() == {0: b"\x00" * 32, 2: b"\x02" * 32}


def test_sites_that_are_not_connected_are_not_waited_for():
    board = TaskBoard(3)
    started = time.monotonic()
    assert board.exchange({1: (train_task(), accept)}, timeout=5) == {}
    assert time.monotonic() - started < 1


def test_a_late_site_is_dropped_and_its_reply_refused():
    board = TaskBoard(2)
    token = board.join(0, b"k" * 32)
    pulled = []
    puller = threading.Thread(target=lambda: pulled.append(board.next_task(token, timeout=5)))
    puller.start()
    assert board.exchange({0: (train_task(), accept)}, timeout=0.2) == {}
    puller.join()
    with pytest.raises(ProtocolError, match="not open: late"):
        board.answer(token, pb.Reply(task_id=pulled[0].task_id, round=1))


def test_refusals_count_as_dropped_without_waiting():
    board = TaskBoard(1)
    token = board.join(0, b"k" * 32)
    worker = answer_in_background(board, token, refuse=True)
    started = time.monotonic()
    assert board.exchange({0: (train_task(), accept)}, timeout=5) == {}
    worker.join()
    assert time.monotonic() - started < 4


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda task, token: (token, pb.Reply(task_id=b"?" * 16, round=1)), "never issued"),
        (lambda task, token: (token, pb.Reply(task_id=task.task_id, round=9)), "round 9 to a"),
        (lambda task, other: (other, pb.Reply(task_id=task.task_id, round=1)), "did not pull"),
    ],
)
def test_wrong_replies_are_refused_and_the_task_stays_open(tamper, message):
    board = TaskBoard(2)
    token, other = board.join(0, b"a" * 32), board.join(1, b"b" * 32)
    results = []

    def site():
        task = board.next_task(token, timeout=5)
        sender = other if "pull" in message else token
        who, reply = tamper(task, sender)
        try:
            board.answer(who, reply)
        except ProtocolError as error:
            results.append(str(error))
        board.answer(token, pb.Reply(task_id=task.task_id, round=1))  # the right one still counts

    thread = threading.Thread(target=site)
    thread.start()
    assert board.exchange({0: (train_task(), accept)}, timeout=5) == {0: 1}
    thread.join()
    assert len(results) == 1 and message in results[0]


def test_a_check_that_fails_refuses_the_reply():
    board = TaskBoard(1)
    token = board.join(0, b"k" * 32)

    def strict(reply):
        raise ProtocolError("tensor 'w' has the wrong shape")

    errors = []

    def site():
        task = board.next_task(token, timeout=5)
        try:
            board.answer(token, pb.Reply(task_id=task.task_id, round=1))
        except ProtocolError as error:
            errors.append(str(error))

    thread = threading.Thread(target=site)
    thread.start()
    assert board.exchange({0: (train_task(), strict)}, timeout=0.5) == {}
    thread.join()
    assert errors == ["tensor 'w' has the wrong shape"]


def test_joining_again_ends_the_old_session_and_its_tasks():
    board = TaskBoard(1)
    old = board.join(0, b"a" * 32)
    assert board.next_task(old, timeout=0) is None

    def restart():
        board.next_task(old, timeout=5)  # the task is pulled, then the process dies ...
        board.join(0, b"b" * 32)  # ... and comes back

    thread = threading.Thread(target=restart)
    thread.start()
    started = time.monotonic()
    assert board.exchange({0: (train_task(), accept)}, timeout=5) == {}
    thread.join()
    assert time.monotonic() - started < 4  # not waited for until the deadline
    with pytest.raises(UnknownSession, match="join again"):
        board.site_of(old)
    assert board.identities() == {0: b"b" * 32}


def test_connected_sites_are_those_polling_recently():
    board = TaskBoard(2, liveness=0.2)
    board.join(0, b"a" * 32)
    assert board.connected() == [0] and board.wait_for_sites(1, timeout=0)
    assert not board.wait_for_sites(2, timeout=0.1)
    time.sleep(0.3)
    assert board.connected() == []


def test_finish_reaches_every_site():
    board = TaskBoard(2)
    tokens = [board.join(s, b"k" * 32) for s in (0, 1)]
    board.finish("the run is over")
    assert not board.wait_until_told(0.05)
    tasks = [board.next_task(t, timeout=1) for t in tokens]
    assert all(t.finish.reason == "the run is over" for t in tasks)
    assert board.wait_until_told(0.05)
