"""Run one program at every party: as threads of this process, or as separate processes over TLS.

``run_parties(program, args)`` calls ``program(party, *args[i])`` at party ``i`` and returns every
party's result, or raises. Each party gets only its own arguments (its own data), and in
process mode nothing but TLS links (`veil.mpc.tls`) joins the processes; the launcher only
starts them, hands out their certificates and collects what they return.

Failure is all-or-nothing: a party whose program raises tells its peers why (an abort frame)
and leaves; every peer then fails with a `ProtocolError` at its next receive, at the latest
after the deadline; and ``run_parties`` returns no result at all, raising `PartiesFailed` with
each party's reason (or the `ConfigError` of a party that was given bad input).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from veil.errors import ConfigError, ProtocolError
from veil.mpc.channel import local_link_pair
from veil.mpc.party import OperationCost, Party
from veil.mpc.tls import TlsNetwork, issue_party_credentials

__all__ = ["PartiesFailed", "PartyResult", "run_parties"]

Program = Callable[..., Any]


@dataclass(frozen=True)
class PartyResult:
    """What one party's program returned, what its messages cost, and its wall time."""

    value: Any
    costs: dict[str, OperationCost]
    seconds: float


class PartiesFailed(ProtocolError):
    """The computation failed; ``failures`` maps each failed party to its reason."""

    def __init__(self, failures: dict[int, str]) -> None:
        self.failures = dict(sorted(failures.items()))
        reasons = "; ".join(f"party {i}: {reason}" for i, reason in self.failures.items())
        super().__init__(f"the MPC run failed and released nothing ({reasons})")


def run_parties(
    program: Program,
    args: Sequence[tuple],
    *,
    processes: bool = False,
    deadline: float = 30.0,
) -> list[PartyResult]:
    """Run ``program(party, *args[i])`` at parties ``0 .. len(args) - 1``.

    ``processes=True`` starts one fresh Python process per party (``program``
    and its arguments must be picklable, the program a module-level function of an importable
    module); otherwise each party is a thread.
    ``deadline`` bounds every wait for a peer's message, in seconds.
    """
    if len(args) < 2:
        raise ConfigError(f"an MPC run needs at least 2 parties (got {len(args)})")
    if not deadline > 0:
        raise ConfigError(f"deadline must be > 0 seconds (got {deadline})")
    run = _run_processes if processes else _run_threads
    outcomes = run(program, list(args), deadline)
    failures = {i: o for i, o in enumerate(outcomes) if not isinstance(o, PartyResult)}
    if failures:
        for reason in failures.values():
            if reason.startswith("ConfigError: "):
                raise ConfigError(reason.removeprefix("ConfigError: "))
        raise PartiesFailed({i: r.split(": ", 1)[-1] for i, r in failures.items()})
    return outcomes


def _run_as_party(program: Program, party: Party, args: tuple) -> PartyResult | str:
    """``program`` at ``party``, then the closing round (`Party.finish`): its result, or
    ``"ErrorType: reason"`` after aborting."""
    started = time.perf_counter()
    try:
        value = program(party, *args)
        party.finish()
    except BaseException as error:  # also SystemExit or KeyboardInterrupt in a party's thread
        reason = f"{type(error).__name__}: {error}"
        if not isinstance(error, ConfigError | ProtocolError):
            reason += " | " + traceback.format_exc(limit=3).replace("\n", " ")
        party.abort(f"{type(error).__name__}: {error}")
        return reason
    party.close()
    return PartyResult(value, party.costs, time.perf_counter() - started)


def _run_threads(program: Program, args: list[tuple], deadline: float) -> list:
    count = len(args)
    links: list[dict] = [{} for _ in range(count)]
    for i, j in combinations(range(count), 2):
        links[i][j], links[j][i] = local_link_pair()
    outcomes: list = [None] * count

    def work(i: int) -> None:
        outcomes[i] = _run_as_party(program, Party(i, count, links[i], deadline), args[i])

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def _write(stream, message: Any) -> None:
    data = pickle.dumps(message)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _read(stream, timeout: float | None) -> Any:
    """The next message on ``stream``; ``EOFError`` if it closed, ``TimeoutError``."""
    if timeout is not None and not select.select([stream], [], [], timeout)[0]:
        raise TimeoutError
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError
    (length,) = struct.unpack("<Q", header)
    data = stream.read(length)
    if len(data) < length:
        raise EOFError
    return pickle.loads(data)


def _party_process() -> None:
    """Body of a party's process (a fresh Python that imports only veil.mpc): read its
    assignment from the launcher on stdin, connect over TLS, run, write the outcome to stdout."""
    to_launcher = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything the program prints goes to stderr, not into the outcome stream
    from_launcher = sys.stdin.buffer
    index, count, credentials, program, args, deadline = _read(from_launcher, None)
    try:
        network = TlsNetwork(index, credentials, deadline)
    except Exception as error:
        _write(to_launcher, f"ProtocolError: party {index} cannot listen: {error}")
        return
    try:
        _write(to_launcher, network.port)
        links = network.connect(_read(from_launcher, deadline))
        party = Party(index, count, links, deadline)
        _write(to_launcher, _run_as_party(program, party, args))
    except Exception as error:
        _write(to_launcher, f"{type(error).__name__}: {error}")
    finally:
        network.close()


def _run_processes(program: Program, args: list[tuple], deadline: float) -> list:
    credentials = issue_party_credentials(len(args))
    command = [sys.executable, "-c", "from veil.mpc.runner import _party_process; _party_process()"]
    workers = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in args
    ]
    try:
        for i, worker in enumerate(workers):
            with contextlib.suppress(BrokenPipeError):  # the outcome below says why it is gone
                _write(worker.stdin, (i, len(args), credentials[i], program, args[i], deadline))
        ports = [_outcome(worker, 2 * deadline + 30) for worker in workers]
        if not all(isinstance(p, int) for p in ports):
            return [
                p if isinstance(p, str) else "ProtocolError: a peer failed to start" for p in ports
            ]
        for worker in workers:
            _write(worker.stdin, dict(enumerate(ports)))
        return [_outcome(worker, None) for worker in workers]
    finally:
        for worker in workers:
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def _outcome(worker: subprocess.Popen, timeout: float | None) -> Any:
    """The next message from a party's process, or why there is none."""
    try:
        return _read(worker.stdout, timeout)
    except TimeoutError:
        return "ProtocolError: the party's process did not answer in time"
    except EOFError:
        return f"ProtocolError: process exited with code {worker.wait()} before answering"
