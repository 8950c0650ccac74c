"""How veil's gRPC messages travel: chunks under a size limit, credentials, retries with backoff.

A `Task` or `Reply` is serialized and cut into chunks of at most ``chunk_bytes``, so a large
model update streams instead of needing one huge gRPC message; the receiver refuses a message
whose chunks add up to more than ``max_message_bytes`` before holding it in memory. gRPC's own
per-message limit is set just above the chunk size, so a single oversized frame is refused by
gRPC itself (RESOURCE_EXHAUSTED).

mTLS by default: `server_credentials` requires a client certificate signed by the deployment's
CA (`veil.runtime.certs`); plaintext exists only for tests and demos on a trusted loopback.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from veil.errors import ConfigError, ProtocolError
from veil.runtime.certs import Credentials
from veil.runtime.grpc import veil_pb2 as pb

SESSION_KEY = "veil-session-bin"  # gRPC metadata: the token `Join` returned (binary header)
FRAME_OVERHEAD = 64 * 1024  # protobuf and gRPC framing around one chunk
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
M = TypeVar("M", bound=Message)
T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """Sizes on the wire: chunks of a message, and the largest message either side accepts."""

    chunk_bytes: int = 1 << 20
    max_message_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        if not 1024 <= self.chunk_bytes <= self.max_message_bytes:
            raise ConfigError(
                f"chunk size must be in [1024, max message size = {self.max_message_bytes}] "
                f"bytes (got {self.chunk_bytes})"
            )

    def options(self) -> list[tuple[str, int]]:
        """gRPC channel and server options: per-frame limits just above one chunk."""
        frame = self.chunk_bytes + FRAME_OVERHEAD
        return [
            ("grpc.max_send_message_length", frame),
            ("grpc.max_receive_message_length", frame),
            ("grpc.so_reuseport", 0),  # a second server on the same port fails instead of sharing
        ]


def to_chunks(message: Message, limits: Limits) -> Iterator[pb.Chunk]:
    """``message`` serialized and cut into chunks (at least one, even when empty)."""
    data = message.SerializeToString()
    size = limits.chunk_bytes
    if len(data) > limits.max_message_bytes:
        raise ProtocolError(
            f"message of {len(data)} bytes exceeds the limit of {limits.max_message_bytes}"
        )
    for start in range(0, max(len(data), 1), size):
        yield pb.Chunk(data=data[start : start + size])


def from_chunks(chunks: Iterable[pb.Chunk], kind: type[M], limits: Limits) -> M:
    """Reassemble and parse a message of type ``kind``; `ProtocolError` if the chunks add up to
    more than the limit (reading stops there) or do not parse."""
    parts, total = [], 0
    for chunk in chunks:
        total += len(chunk.data)
        if total > limits.max_message_bytes:
            raise ProtocolError(
                f"{kind.__name__} larger than the limit of {limits.max_message_bytes} bytes"
            )
        parts.append(chunk.data)
    try:
        return kind.FromString(b"".join(parts))
    except DecodeError:
        raise ProtocolError(
            f"malformed {kind.__name__}: the bytes do not parse (truncated or corrupt)"
        ) from None


def server_credentials(credentials: Credentials) -> grpc.ServerCredentials:
    """mTLS: the server's certificate, and a client certificate from the CA required."""
    return grpc.ssl_server_credentials(
        [(credentials.key, credentials.certificate)],
        root_certificates=credentials.authority,
        require_client_auth=True,
    )


def channel_credentials(credentials: Credentials) -> grpc.ChannelCredentials:
    """mTLS from a site: trust only the CA, present the site's certificate."""
    return grpc.ssl_channel_credentials(
        credentials.authority, credentials.key, credentials.certificate
    )


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: the k-th wait is uniform in
    [0, min(maximum, initial · factor^k)] (spreads reconnecting sites apart)."""

    initial: float = 0.2
    factor: float = 2.0
    maximum: float = 5.0

    def delays(self) -> Iterator[float]:
        rng = random.Random()
        ceiling = self.initial
        while True:
            yield rng.uniform(0, ceiling)
            ceiling = min(self.maximum, ceiling * self.factor)


def with_retries(
    call: Callable[[], T],
    backoff: Backoff,
    give_up_after: float,
    on_retry: Callable[[grpc.RpcError, float], None] | None = None,
) -> T:
    """``call()``, retried after UNAVAILABLE or DEADLINE_EXCEEDED with ``backoff`` for up to
    ``give_up_after`` seconds; other errors (and the last retryable one) are raised."""
    deadline = time.monotonic() + give_up_after
    delays = backoff.delays()
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            delay = next(delays)
            if error.code() not in RETRYABLE or time.monotonic() + delay > deadline:
                raise
            if on_retry is not None:
                on_retry(error, delay)
            time.sleep(delay)
