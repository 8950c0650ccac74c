"""Messages between parties: the wire format, and the in-process link used by tests and threads.

Every message is one frame: a fixed header, the array's shape, and its raw bytes::

    magic "VM" | version u8 | kind u8 | sequence u64 | dtype u8 | ndim u8 | payload length u64
    | shape (ndim × u64) | payload

``kind`` is data, finish (the closing round's frame, `veil.mpc.party.Party.finish`) or abort
(the payload of an abort is the UTF-8 reason). ``sequence`` numbers the
frames of one direction of one link from 0, so a replayed, dropped or reordered frame is caught
by the receiver (`veil.mpc.party.Party.receive`). A link only moves whole frames; it never
interprets them. `LocalLink` joins two parties of one process through `QueueLink` inboxes;
`veil.mpc.tls` joins parties in different processes through TLS sockets.
"""

from __future__ import annotations

import math
import queue
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from veil.errors import ProtocolError

__all__ = [
    "ABORT",
    "CLOSED",
    "DATA",
    "FINISH",
    "MAX_FRAME_BYTES",
    "Frame",
    "Link",
    "LocalLink",
    "QueueLink",
    "decode_frame",
    "encode_frame",
    "frame_length",
    "local_link_pair",
]

DATA, ABORT, FINISH = 1, 2, 3
MAGIC, VERSION = b"VM", 1
MAX_FRAME_BYTES = 2**31  # a larger frame is refused rather than buffered
HEADER = struct.Struct("<2sBBQBBQ")
_DTYPES = {1: np.dtype(np.uint64), 2: np.dtype(np.uint8), 3: np.dtype(np.int64)}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}
CLOSED = None  # what a link's inbox yields once the peer has gone


@dataclass(frozen=True)
class Frame:
    """A decoded frame: ``array`` for data, ``reason`` for an abort."""

    kind: int
    sequence: int
    array: np.ndarray | None = None
    reason: str = ""


def encode_frame(
    sequence: int, array: np.ndarray | None = None, reason: str = "", kind: int = DATA
) -> bytes:
    """Frame bytes of a message carrying ``array`` (``kind`` data or finish) or, without an
    array, an abort (``reason``)."""
    if array is None:
        payload = reason.encode("utf-8")
        return HEADER.pack(MAGIC, VERSION, ABORT, sequence, 2, 1, len(payload)) + (
            struct.pack("<Q", len(payload)) + payload
        )
    array = np.asarray(array, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
    if array.dtype not in _CODES:
        raise ProtocolError(f"cannot send an array of dtype {array.dtype} (uint64/uint8/int64)")
    if kind not in (DATA, FINISH):
        raise ProtocolError(f"an array travels in a data or finish frame (got kind {kind})")
    header = HEADER.pack(
        MAGIC, VERSION, kind, sequence, _CODES[array.dtype], array.ndim, array.nbytes
    )
    return header + struct.pack(f"<{array.ndim}Q", *array.shape) + array.tobytes()


def frame_length(header: bytes) -> int:
    """Total bytes of the frame that starts with ``header`` (`HEADER.size` bytes)."""
    magic, version, _kind, _sequence, _dtype, ndim, payload = HEADER.unpack(header)
    if magic != MAGIC or version != VERSION:
        raise ProtocolError("received bytes that are not a veil MPC frame (bad magic or version)")
    total = HEADER.size + 8 * ndim + payload
    if total > MAX_FRAME_BYTES:
        raise ProtocolError(f"received a frame of {total} bytes, above the {MAX_FRAME_BYTES} limit")
    return total


def decode_frame(data: bytes) -> Frame:
    """Parse frame bytes; `ProtocolError` if they are malformed."""
    if len(data) < HEADER.size or len(data) != frame_length(data[: HEADER.size]):
        raise ProtocolError(f"received a truncated or padded frame ({len(data)} bytes)")
    _magic, _version, kind, sequence, code, ndim, payload = HEADER.unpack(data[: HEADER.size])
    shape = struct.unpack(f"<{ndim}Q", data[HEADER.size : HEADER.size + 8 * ndim])
    body = data[HEADER.size + 8 * ndim :]
    if kind == ABORT:
        return Frame(ABORT, sequence, reason=body.decode("utf-8", errors="replace"))
    dtype = _DTYPES.get(code)
    if kind not in (DATA, FINISH) or dtype is None or payload != math.prod(shape) * dtype.itemsize:
        raise ProtocolError(f"received a malformed frame (kind {kind}, dtype code {code})")
    return Frame(kind, sequence, np.frombuffer(body, dtype=dtype).reshape(shape))


class Link(ABC):
    """One party's end of a two-party connection: sends and receives whole frames."""

    @abstractmethod
    def send(self, frame: bytes) -> None:
        """Queue ``frame`` for the peer (never blocks on the peer)."""

    @abstractmethod
    def receive(self, timeout: float) -> bytes:
        """The next frame; `ProtocolError` if the peer has gone or ``timeout`` seconds pass."""

    @abstractmethod
    def close(self) -> None:
        """Tell the peer this end has gone; later sends are dropped."""


class QueueLink(Link):
    """A link whose incoming frames land in a queue: frame bytes, a `ProtocolError` that the
    transport met, or `CLOSED` once the peer has gone."""

    def __init__(self) -> None:
        self.inbox: queue.Queue = queue.Queue()

    def receive(self, timeout: float) -> bytes:
        try:
            item = self.inbox.get(timeout=timeout)
        except queue.Empty:
            raise ProtocolError(f"no message from the peer within {timeout:g} s") from None
        if item is CLOSED or isinstance(item, ProtocolError):
            self.inbox.put(item)  # every later receive fails the same way
            raise item if isinstance(item, ProtocolError) else ProtocolError("peer disconnected")
        return item


class LocalLink(QueueLink):
    """A link between two parties of one process: each end puts frames in the other's inbox."""

    def __init__(self) -> None:
        super().__init__()
        self.peer: LocalLink | None = None
        self._closed = False

    def send(self, frame: bytes) -> None:
        if not self._closed and self.peer is not None:
            self.peer.inbox.put(frame)

    def close(self) -> None:
        if not self._closed and self.peer is not None:
            self._closed = True
            self.peer.inbox.put(CLOSED)


def local_link_pair() -> tuple[LocalLink, LocalLink]:
    """Two connected in-process link ends."""
    first, second = LocalLink(), LocalLink()
    first.peer, second.peer = second, first
    return first, second
