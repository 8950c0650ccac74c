"""The communication floor of a run: its message pattern replayed with no computation.

A party that records its rounds (``Party.trace``, one entry per `Party.exchange`: the shapes
and dtypes it sent to and expected from each peer) can replay them later, sending zeros of the
same shapes in the same order over the same kind of links. The replay's time is what the run
would take if every local computation were free: the latency and bandwidth cost of its rounds
alone, on this machine and transport. Comparing it with the run's time splits the run into
communication and computation.
"""

from __future__ import annotations

import time

import numpy as np

from veil.mpc.party import Party
from veil.mpc.runner import run_parties

__all__ = ["replay_seconds", "replay_trace"]

Trace = list[tuple[dict, dict]]


def replay_trace(party: Party, trace: Trace) -> float:
    """Send and receive the messages of ``trace`` (zeros of the recorded shapes) in order;
    the seconds it took."""
    started = time.perf_counter()
    for outgoing, expected in trace:
        party.exchange(
            {peer: np.zeros(shape, dtype) for peer, (shape, dtype) in outgoing.items()},
            expected,
        )
    return time.perf_counter() - started


def replay_seconds(traces: list[Trace], *, processes: bool = True, deadline: float = 60.0) -> float:
    """The slowest party's time to replay every party's trace together (one fresh process per
    party over TLS, as `veil.mpc.runner.run_parties` runs them)."""
    args = [(trace,) for trace in traces]
    results = run_parties(replay_trace, args, processes=processes, deadline=deadline)
    return max(result.value for result in results)
