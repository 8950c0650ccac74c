"""One party of a multi-party computation: its links to the others, message checks and counters.

Protocols are written once, as the program every party runs in lockstep (SPMD); a party only
talks to its peers through `Party.exchange`, one call per communication round. Every received
frame is checked before any protocol sees it: an abort from a peer, a sequence number other than
the next one expected (replay, loss, reordering), or a dtype or shape other than the protocol's
raise `ProtocolError` naming the peer and the operation. Nothing waits forever: each receive has
a deadline.

Bytes (whole frames, as sent) and rounds are counted per operation (`Party.operation`), so a run
can report what each of add / mul / matmul / truncation / comparison cost on the wire.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from veil.errors import ProtocolError
from veil.mpc.channel import ABORT, DATA, FINISH, Link, decode_frame, encode_frame

__all__ = ["OperationCost", "Party"]

Expected = tuple[tuple[int, ...], np.dtype | type]
_KIND_NAMES = {DATA: "a share", FINISH: "its closing message"}


@dataclass
class OperationCost:
    """What one kind of operation cost a party: calls, rounds, bytes sent and received."""

    calls: int = 0
    rounds: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0

    def as_dict(self) -> dict[str, int]:
        """Plain numbers, for metrics.json."""
        return {
            "calls": self.calls,
            "rounds": self.rounds,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
        }


@dataclass
class Party:
    """Party ``index`` of ``num_parties``, with a `Link` to every peer.

    ``deadline`` (seconds) bounds every wait for a peer's message. ``state`` holds per-session
    protocol state that later calls reuse (e.g. the base OTs of `veil.mpc.ot_extension`).
    Set ``trace`` to a list to record every round's message shapes (`veil.mpc.replay`).
    """

    index: int
    num_parties: int
    links: Mapping[int, Link]
    deadline: float = 30.0
    costs: dict[str, OperationCost] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    trace: list | None = None
    _sent: dict[int, int] = field(default_factory=dict)
    _received: dict[int, int] = field(default_factory=dict)
    _operations: list[str] = field(default_factory=lambda: ["other"])

    @property
    def peers(self) -> list[int]:
        """The other parties' indices."""
        return sorted(self.links)

    @contextmanager
    def operation(self, name: str) -> Iterator[None]:
        """Count the messages sent inside the block towards ``name`` (innermost name wins)."""
        self._cost(name).calls += 1
        self._operations.append(name)
        try:
            yield
        finally:
            self._operations.pop()

    def exchange(
        self,
        outgoing: Mapping[int, np.ndarray],
        expected: Mapping[int, Expected],
    ) -> dict[int, np.ndarray]:
        """One communication round: send ``outgoing[peer]`` to each peer, then receive from
        each peer of ``expected`` an array of the given ``(shape, dtype)``."""
        return self._round(outgoing, expected, DATA)

    def _round(self, outgoing, expected, kind: int) -> dict[int, np.ndarray]:
        cost = self._cost(self._operations[-1])
        cost.rounds += 1
        if self.trace is not None:
            self.trace.append(
                (
                    {peer: (array.shape, array.dtype.str) for peer, array in outgoing.items()},
                    {
                        peer: (tuple(shape), np.dtype(dtype).str)
                        for peer, (shape, dtype) in expected.items()
                    },
                )
            )
        for peer, array in outgoing.items():
            frame = encode_frame(self._sent.get(peer, 0), array, kind=kind)
            self._link(peer).send(frame)
            self._sent[peer] = self._sent.get(peer, 0) + 1
            cost.bytes_sent += len(frame)
        return {peer: self._receive(peer, *spec, kind) for peer, spec in expected.items()}

    def send(self, peer: int, array: np.ndarray) -> None:
        """A round of one message to ``peer``."""
        self.exchange({peer: array}, {})

    def receive(self, peer: int, shape: tuple[int, ...], dtype=np.uint64) -> np.ndarray:
        """A round of one message from ``peer``, of the given shape and dtype."""
        return self.exchange({}, {peer: (tuple(shape), dtype)})[peer]

    def finish(self) -> None:
        """A closing round: every party tells each peer how many frames it sent it, and checks
        that it has read exactly the frames each peer says it sent. A peer that ran ahead, fell
        behind or aborted is caught here even if this party never waited for it before, so a
        run ends in agreement or in `ProtocolError` at every party."""
        with self.operation("finish"):
            counts = {peer: self._sent.get(peer, 0) for peer in self.peers}
            received = self._round(
                {peer: np.array([count], np.uint64) for peer, count in counts.items()},
                {peer: ((1,), np.uint64) for peer in self.peers},
                FINISH,
            )
        for peer, (sent,) in received.items():
            read = self._received.get(peer, 0) - 1  # the finish frame itself not included
            if sent != read:
                raise ProtocolError(
                    f"finish: party {peer} sent {sent} messages where this party read {read}"
                )

    def abort(self, reason: str) -> None:
        """Tell every peer this party gives up (and why), then close the links."""
        for peer, link in self.links.items():
            with suppress(Exception):
                link.send(encode_frame(self._sent.get(peer, 0), reason=reason[:2000]))
        self.close()

    def close(self) -> None:
        """Close every link."""
        for link in self.links.values():
            link.close()

    def total(self) -> OperationCost:
        """The sum of all operations' costs."""
        total = OperationCost()
        for cost in self.costs.values():
            total.calls += cost.calls
            total.rounds += cost.rounds
            total.bytes_sent += cost.bytes_sent
            total.bytes_received += cost.bytes_received
        return total

    def _cost(self, name: str) -> OperationCost:
        return self.costs.setdefault(name, OperationCost())

    def _link(self, peer: int) -> Link:
        if peer not in self.links:
            raise ProtocolError(f"party {self.index} has no link to party {peer}")
        return self.links[peer]

    def _receive(self, peer: int, shape: tuple[int, ...], dtype, kind: int = DATA) -> np.ndarray:
        operation = self._operations[-1]
        try:
            data = self._link(peer).receive(self.deadline)
            frame = decode_frame(data)
        except ProtocolError as error:
            raise ProtocolError(f"{operation}: party {peer}: {error}") from None
        self._cost(operation).bytes_received += len(data)
        expected_sequence = self._received.get(peer, 0)
        if frame.kind == ABORT:
            raise ProtocolError(f"{operation}: party {peer} aborted: {frame.reason}")
        if frame.sequence != expected_sequence:
            raise ProtocolError(
                f"{operation}: party {peer} sent message {frame.sequence} where message "
                f"{expected_sequence} was due (replayed, lost or out of order)"
            )
        self._received[peer] = expected_sequence + 1
        if frame.kind != kind:
            sent, due = _KIND_NAMES[frame.kind], _KIND_NAMES[kind]
            raise ProtocolError(
                f"{operation}: party {peer} sent {sent} where {due} was due (the parties ran "
                "different programs)"
            )
        array = frame.array
        if array.dtype != np.dtype(dtype) or array.shape != tuple(shape):
            raise ProtocolError(
                f"{operation}: party {peer} sent a {array.dtype} array of shape {array.shape} "
                f"where {np.dtype(dtype)} of shape {tuple(shape)} was due (malformed or "
                "mis-sized share)"
            )
        return array
