import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from veil.errors import ConfigError, ProtocolError
from veil.mpc.beaver import TrustedDealer
from veil.mpc.runner import PartiesFailed, run_parties
from veil.mpc.training import (
    PartyData,
    TrainingSpec,
    mask_plan,
    secure_training_program,
    triple_plan,
)


def echo(party, value):
    received = party.exchange(
        {p: value for p in party.peers}, {p: ((2,), np.uint64) for p in party.peers}
    )
    return sorted(int(v.sum()) for v in received.values())


def test_threads_run_every_party_and_return_costs():
    results = run_parties(echo, [(np.full(2, i, np.uint64),) for i in range(3)])
    assert [r.value for r in results] == [[2, 4], [0, 4], [0, 2]]
    assert all(r.costs["other"].rounds == 1 and r.seconds > 0 for r in results)


def fail_at_party_one(party):
    if party.index == 1:
        raise ProtocolError("share out of range")
    return party.receive(1, (1,))


def test_a_failure_reaches_every_party_and_nothing_is_released():
    with pytest.raises(PartiesFailed, match="released nothing") as failure:
        run_parties(fail_at_party_one, [(), (), ()])
    assert set(failure.value.failures) == {0, 1, 2}
    assert failure.value.failures[1] == "share out of range"
    assert "party 1 aborted: ProtocolError: share out of range" in failure.value.failures[0]


def bad_input_at_party_zero(party):
    if party.index == 0:
        raise ConfigError("x must be [10, 30]")
    return party.receive(0, (1,))


def test_a_party_given_bad_input_raises_its_config_error():
    with pytest.raises(ConfigError, match=r"x must be \[10, 30\]"):
        run_parties(bad_input_at_party_zero, [(), ()])


def leave_silently(party):
    if party.index == 1:
        party.close()  # disconnects without a word
        return None
    return party.receive(1, (1,))


def test_a_party_that_disconnects_fails_its_peers():
    with pytest.raises(PartiesFailed, match="party 0: other: party 1: peer disconnected"):
        run_parties(leave_silently, [(), ()])


def stall(party):
    if party.index == 1:
        time.sleep(0.5)
        return None
    return party.receive(1, (1,))


def test_a_silent_party_hits_the_deadline_instead_of_hanging():
    started = time.perf_counter()
    with pytest.raises(PartiesFailed, match=r"no message from the peer within 0\.1 s"):
        run_parties(stall, [(), ()], deadline=0.1)
    assert time.perf_counter() - started < 5


def test_bad_runner_arguments():
    with pytest.raises(ConfigError, match="at least 2 parties"):
        run_parties(echo, [()])
    with pytest.raises(ConfigError, match="deadline must be > 0"):
        run_parties(echo, [(), ()], deadline=0)


def tiny_training(epochs=(1, 1)):
    """Arguments of a two-party run on 24 rows (one epoch at each party unless told)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 3))
    y = (x[:, 0] > 0).astype(np.int64)
    parts = [PartyData(x[:12], x[:2], y[:12], y[:2]), PartyData(x[12:], x[2:4], y[12:], y[2:4])]
    specs = [
        TrainingSpec((12, 12), (3, 3), (2, 2), epochs=e, batch_size=8, sigmoid="taylor")
        for e in epochs
    ]
    stocks = TrustedDealer().deal(triple_plan(specs[0]), mask_plan(specs[0]))
    return [(specs[i], parts[i], stocks[i]) for i in range(2)]


def test_parties_as_processes_over_tls():
    results = run_parties(secure_training_program, tiny_training(), processes=True, deadline=30)
    first, second = (r.value.weights for r in results)
    assert np.array_equal(first[0], second[0]) and first[0].shape == (4, 1)
    assert results[0].costs["matmul"].rounds == 2 * 3  # two products a step, three steps


@pytest.mark.slow
def test_processes_out_of_step_are_caught_as_mis_sized_shares():
    args = tiny_training(epochs=(2, 1))  # party 1 moves on to the release after one epoch
    with pytest.raises(PartiesFailed, match=r"mis-sized share|ran different programs"):
        run_parties(secure_training_program, args, processes=True, deadline=10)


def _children() -> list[int]:
    """Process ids whose parent is this process (the parties it started)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            children.append(int(stat.parent.name))
    return children


def _sockets(pid: int) -> int:
    """Open sockets of process ``pid`` (a party has its listening socket and one per peer)."""
    try:
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except OSError:
        return 0
    return sum(link.startswith("socket:") for link in links)


@pytest.mark.slow
def test_a_killed_party_process_fails_its_peer_without_a_hang():
    args = tiny_training(epochs=(5000, 5000))  # runs for seconds: long enough to be killed
    outcome = {}

    def launch():
        try:
            run_parties(secure_training_program, args, processes=True, deadline=10)
        except PartiesFailed as failure:
            outcome["failures"] = failure.failures

    thread = threading.Thread(target=launch)
    thread.start()
    victims: list[int] = []
    for _ in range(600):  # wait until both parties are connected, then let them train a little
        victims = _children()
        if len(victims) == 2 and all(_sockets(pid) >= 2 for pid in victims):
            break
        time.sleep(0.05)
    time.sleep(1)
    assert thread.is_alive() and len(victims) == 2
    os.kill(victims[1], signal.SIGKILL)
    thread.join(timeout=60)
    assert not thread.is_alive()
    failures = outcome["failures"]
    assert set(failures) == {0, 1} and "exited with code -9" in " ".join(failures.values())
    assert any("disconnected" in reason for reason in failures.values()), failures


def test_three_parties_out_of_step_fail_together_although_party_2_only_sends():
    """In three-party training hospital 2 deals truncation masks and hears nothing until the
    release; a hospital 2 that runs an extra epoch still ends with an error, as do the others."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(24, 3))
    y = (x[:, 0] > 0).astype(np.int64)
    parts = [PartyData(x[i::3], x[i::3][:1], y[i::3], y[i::3][:1]) for i in range(3)]
    args = [
        (TrainingSpec((8,) * 3, (3,) * 3, (1,) * 3, epochs=e, sigmoid="polynomial"), part)
        for e, part in zip((1, 1, 2), parts, strict=True)
    ]
    with pytest.raises(PartiesFailed, match="released nothing") as failure:
        run_parties(secure_training_program, args, deadline=10)
    assert set(failure.value.failures) == {0, 1, 2}
    assert "mis-sized share" in failure.value.failures[0]


def exit_at_party_one(party):
    if party.index == 1:
        raise SystemExit(3)
    return party.receive(1, (1,))


def test_a_party_thread_that_exits_still_aborts_its_peers():
    started = time.perf_counter()
    with pytest.raises(PartiesFailed, match="party 1: 3") as failure:
        run_parties(exit_at_party_one, [(), ()], deadline=20)
    assert "party 1 aborted: SystemExit: 3" in failure.value.failures[0]
    assert time.perf_counter() - started < 5  # the abort, not the 20 s deadline
