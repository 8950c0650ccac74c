"""The coordinator's task board: which task waits for which site, and what came back.

Sites check in and pull work, and rounds run against deadlines, dropping whoever is late, as in
Bonawitz et al. 2019 ("Towards Federated Learning at Scale: System Design").
The round loop and the gRPC handler threads meet here. A round hands the board one task per
site with a deadline (`TaskBoard.exchange`); each site long-polls for its task (`next_task`)
and pushes its reply (`answer`), which the task's own check decodes and validates before it is
accepted. What has not come back by the deadline is dropped: the round goes on without that
site, as FedAvg and SecAgg+ allow. A reply to a task that is no longer open (late, from another
round, or never issued) is refused.

Sessions: a site joins with its Ed25519 identity key (which signs its SecAgg+ messages) and
gets a random session token. Joining again (the site restarted) ends the old session and drops
its open tasks at once, so a round does not wait for a process that no longer exists. Tokens
live only in memory: after a server restart every site joins again.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from veil.errors import ProtocolError
from veil.runtime.grpc import veil_pb2 as pb

Check = Callable[[pb.Reply], Any]  # decodes and validates a reply; raises ProtocolError


class UnknownSession(ProtocolError):
    """A Pull or Push with a session token the board does not know (join again)."""


@dataclass
class Session:
    site: int
    identity_key: bytes
    last_seen: float


@dataclass
class OpenTask:
    task: pb.Task
    site: int
    check: Check
    session: bytes | None = None  # the session that pulled it
    done: bool = False
    answer: Any = None


@dataclass
class TaskBoard:
    """Tasks for the sites of a federation (ids 0 … num_sites − 1) and their replies.

    A site counts as connected while it polls (seen within ``liveness`` seconds) or works on a
    task it pulled."""

    num_sites: int
    liveness: float = 15.0
    _lock: threading.Condition = field(default_factory=threading.Condition, init=False)
    _sessions: dict[bytes, Session] = field(default_factory=dict, init=False)
    _queues: dict[int, deque] = field(default_factory=dict, init=False)
    _open: dict[bytes, OpenTask] = field(default_factory=dict, init=False)
    _finished: str | None = field(default=None, init=False)
    _told: set[bytes] = field(default_factory=set, init=False)  # sessions that got Finish

    # -- the sites' side (gRPC handler threads) ------------------------------------------------

    def join(self, site: int, identity_key: bytes) -> bytes:
        """Register ``site`` (ending any earlier session of it); return its session token."""
        token = os.urandom(16)
        with self._lock:
            for old in [t for t, s in self._sessions.items() if s.site == site]:
                del self._sessions[old]
            for entry in self._open.values():
                if entry.site == site:
                    entry.done = True  # the old process is gone: do not wait for it
            self._queues[site] = deque()
            self._sessions[token] = Session(site, identity_key, time.monotonic())
            self._lock.notify_all()
        return token

    def site_of(self, token: bytes) -> int:
        """The site of a session token (and mark it seen); `UnknownSession` if there is none."""
        with self._lock:
            return self._touch(token).site

    def next_task(self, token: bytes, timeout: float) -> pb.Task | None:
        """The session's next task, waiting up to ``timeout`` seconds (None: nothing yet);
        after `finish`, a Finish task."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                session = self._touch(token)
                if self._finished is not None:
                    self._told.add(token)
                    self._lock.notify_all()
                    return pb.Task(finish=pb.Finish(reason=self._finished))
                queue = self._queues.get(session.site)
                while queue:
                    entry = self._open.get(queue.popleft())
                    if entry is not None and not entry.done:
                        entry.session = token
                        return entry.task
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._lock.wait(remaining)

    def answer(self, token: bytes, reply: pb.Reply) -> None:
        """Accept ``reply`` for the open task it names, or raise `ProtocolError` saying why not."""
        with self._lock:
            self._touch(token)
            entry = self._open.get(reply.task_id)
            _check_open(entry, token, reply)
        value = entry.check(reply)  # decoding may take a while: outside the lock
        with self._lock:
            if entry.done:
                raise ProtocolError("reply arrived after the task's deadline")
            entry.done, entry.answer = True, value
            self._lock.notify_all()

    # -- the round loop's side -------------------------------------------------------------------

    def connected(self) -> list[int]:
        """Sites that polled within ``liveness`` seconds or hold a task they pulled."""
        with self._lock:
            return sorted(self._connected())

    def identities(self) -> dict[int, bytes]:
        """The identity key of every site with a session."""
        with self._lock:
            return {s.site: s.identity_key for s in self._sessions.values()}

    def wait_for_sites(self, count: int, timeout: float | None = None) -> bool:
        """Wait until at least ``count`` sites are connected (False: ``timeout`` passed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while len(self._connected()) < count:
                remaining = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
            return True

    def exchange(
        self, tasks: Mapping[int, tuple[pb.Task, Check]], timeout: float
    ) -> dict[int, Any]:
        """Give each connected site its task; return the checked answers that came back within
        ``timeout`` seconds, by site. Sites not connected, refusing or late are left out."""
        deadline = time.monotonic() + timeout
        with self._lock:
            alive = self._connected()
            entries = {}
            for site, (task, check) in tasks.items():
                if site not in alive:
                    continue
                task.task_id = os.urandom(16)
                entries[site] = self._open[task.task_id] = OpenTask(task, site, check)
                self._queues.setdefault(site, deque()).append(task.task_id)
            self._lock.notify_all()
            while any(not e.done for e in entries.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            for entry in entries.values():
                entry.done = True
                del self._open[entry.task.task_id]
            return {s: e.answer for s, e in entries.items() if e.answer is not None}

    def finish(self, reason: str) -> None:
        """From now on every pull gets a Finish task with ``reason``."""
        with self._lock:
            self._finished = reason
            self._lock.notify_all()

    def wait_until_told(self, timeout: float) -> bool:
        """After `finish`: wait until every site with a session has pulled its Finish task."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not set(self._sessions) <= self._told:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
            return True

    # -- helpers (called with the lock held) -----------------------------------------------------

    def _touch(self, token: bytes) -> Session:
        session = self._sessions.get(token)
        if session is None:
            raise UnknownSession(
                "unknown session: the server restarted or the site joined again; join again"
            )
        session.last_seen = time.monotonic()
        return session

    def _connected(self) -> set[int]:
        now = time.monotonic()
        polling = {s.site for s in self._sessions.values() if now - s.last_seen <= self.liveness}
        working = {
            e.site for e in self._open.values() if e.session in self._sessions and not e.done
        }
        return polling | working


def _check_open(entry: OpenTask | None, token: bytes, reply: pb.Reply) -> None:
    if entry is None or entry.done:
        raise ProtocolError(
            "reply to a task that is not open: late (past its deadline), for another round, "
            "or never issued"
        )
    if entry.session != token:
        raise ProtocolError("reply to a task this session did not pull")
    if reply.round != entry.task.round:
        raise ProtocolError(f"reply for round {reply.round} to a task of round {entry.task.round}")
