"""Bytes on the wire of a set of processes' connections to a local port, from the kernel.

``ss -tinpe`` (iproute2) lists each established TCP connection with its owning process, its
socket inode and its ``tcp_info`` counters: ``bytes_acked`` (payload this end sent and the peer
acknowledged, plus one for the SYN) and ``bytes_received``. Summed over the connections that
given processes hold to ``127.0.0.1:PORT``, they are what those clients sent and received: TLS
records, HTTP framing and idle polls included, TCP/IP headers not.

A connection vanishes from the listing when it closes (an HTTP server drops idle keep-alive
connections after a few seconds), so `TrafficMeter` reads the listing every ``interval``
seconds in a background thread and keeps each connection's last totals: a connection counts
in full unless it moved bytes in the last ``interval`` before closing.

Standard library only: both veil's benchmark and the Flower app it compares with import it.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Collection

_OWNER = re.compile(r"pid=(\d+)")
_INODE = re.compile(r"\bino:(\d+)")
_SENT = re.compile(r"bytes_acked:(\d+)")
_RECEIVED = re.compile(r"bytes_received:(\d+)")


def connections_to(port: int, pids: Collection[int]) -> dict[tuple[str, str], tuple[int, int]]:
    """Bytes (sent, received) so far of each established TCP connection that one of ``pids``
    holds to local port ``port``, keyed by (local address, socket inode)."""
    listing = subprocess.run(
        ["ss", "-tinpeH", "state", "established", f"( dport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_connections(listing, set(pids))


def parse_connections(listing: str, pids: set[int]) -> dict[tuple[str, str], tuple[int, int]]:
    """The connections of ``ss -tinpeH`` output (a line per connection, then its indented
    tcp_info) owned by one of ``pids``: (local address, inode) → (bytes sent, received)."""
    connections = {}
    for entry in re.split(r"\n(?=\S)", listing.strip()):
        owners = {int(pid) for pid in _OWNER.findall(entry)}
        if not owners & pids:
            continue
        fields = entry.split()
        inode = _INODE.search(entry)
        key = (fields[2], inode.group(1) if inode else "")
        sent, received = _SENT.search(entry), _RECEIVED.search(entry)
        connections[key] = (
            int(sent.group(1)) if sent else 0,
            int(received.group(1)) if received else 0,
        )
    return connections


def _count(pattern: re.Pattern, entry: str) -> int:
    found = pattern.search(entry)  # ss leaves out a counter that is still 0
    return int(found.group(1)) if found else 0


class TrafficMeter:
    """Total bytes (sent, received) of processes ``pids`` to local port ``port``, over every
    connection seen since `start`, closed ones included with their last-read totals."""

    def __init__(self, port: int, pids: Collection[int], interval: float = 0.5):
        self.port, self.pids, self.interval = port, list(pids), interval
        self._seen: dict[tuple[str, str], tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="traffic meter", daemon=True)

    def start(self) -> TrafficMeter:
        self.read()
        self._thread.start()
        return self

    def read(self) -> tuple[int, int]:
        """The totals now (reads the connections first)."""
        with self._lock:
            self._seen.update(connections_to(self.port, self.pids))
            sent = sum(s for s, _ in self._seen.values())
            received = sum(r for _, r in self._seen.values())
        return sent, received

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.read()
