"""TLS links between party processes: mutual TLS 1.3 over loopback sockets, one thread per party.

Each party (`TlsNetwork`) listens on an ephemeral port, connects to every party with a smaller
index and accepts every party with a larger one, so each pair shares one TCP connection
(``TCP_NODELAY``). After the handshake the sockets are non-blocking and driven by the protocol
thread itself, so a round trip costs two TLS records and no thread hand-off: a send encrypts the
frame into the link's outbox and writes what the kernel takes; a receive waits (``select``, with
the deadline) on *all* of the party's sockets, reading every peer's bytes and flushing every
outbox while it waits, so two parties that both send large frames before receiving never
deadlock. Frames are cut out of each connection's byte stream by their length
(`veil.mpc.channel.frame_length`).

Authentication: a fresh certificate authority per session (`issue_party_credentials`) signs one
ECDSA P-256 certificate per party, named ``party-<index>``. Both ends present certificates and
check them against that CA; the connecting side checks the name of the party it meant to reach,
the accepting side learns who connected from the certificate, not from anything the peer says.
Threat model: the launcher that issues the certificates is trusted (as the dealer is); a
network attacker can delay or cut traffic (every wait has a deadline) but not read or forge it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import select
import socket
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from veil.errors import ProtocolError
from veil.mpc.channel import HEADER, Link, frame_length

__all__ = ["PartyCredentials", "TlsLink", "TlsNetwork", "issue_party_credentials", "party_name"]

HOST = "127.0.0.1"
CLOSE_SECONDS = 10.0  # how long a closing link may take to hand its last frames to the kernel
_RETRY = (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError)


@dataclass(frozen=True)
class PartyCredentials:
    """PEM bytes a party needs for mutual TLS: its key, its certificate, the session CA's.

    (The shape of `veil.runtime.certs.Credentials`, kept here so that a party process does not
    import `veil.runtime` and torch with it.)"""

    key: bytes
    certificate: bytes
    authority: bytes


def party_name(index: int) -> str:
    """The certificate name of party ``index``."""
    return f"party-{index}"


def issue_party_credentials(num_parties: int, hours: int = 24) -> list[PartyCredentials]:
    """A fresh CA and one certificate per party (server and client use), valid ``hours``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "veil MPC session CA")])
    ca = (
        _certificate(ca_name, ca_name, ca_key.public_key(), now, hours)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    authority = ca.public_bytes(serialization.Encoding.PEM)
    purposes = x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    credentials = []
    for index in range(num_parties):
        key = ec.generate_private_key(ec.SECP256R1())
        name = party_name(index)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        certificate = (
            _certificate(subject, ca_name, key.public_key(), now, hours)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(purposes, critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem_key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        pem = certificate.public_bytes(serialization.Encoding.PEM)
        credentials.append(PartyCredentials(pem_key, pem, authority))
    return credentials


def _certificate(subject, issuer, public_key, now, hours: int) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=hours))
    )


def _contexts(credentials: PartyCredentials) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS 1.3 contexts that present ``credentials`` and require the peer's."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with tempfile.TemporaryDirectory() as folder:  # ssl loads a key only from a file
        key, certificate = Path(folder) / "party.key", Path(folder) / "party.pem"
        descriptor = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(credentials.key)
        certificate.write_bytes(credentials.certificate)
        for context in (server, client):
            context.minimum_version = ssl.TLSVersion.TLSv1_3
            context.load_cert_chain(certificate, key)
            context.load_verify_locations(cadata=credentials.authority.decode())
            context.verify_mode = ssl.CERT_REQUIRED
    return server, client


class TlsLink(Link):
    """One TLS connection to a peer. Its ``receive`` also serves the party's other links
    (``siblings``, this one included) while it waits, so no peer's traffic ever stalls."""

    def __init__(self, sock: ssl.SSLSocket, siblings: list[TlsLink]) -> None:
        sock.setblocking(False)
        self._sock, self._siblings = sock, siblings
        self._incoming, self._outbox = bytearray(), bytearray()
        self._chunk = memoryview(bytearray(1 << 16))  # a TLS record holds at most 16 KiB
        self._failure: ProtocolError | None = None  # set once the peer has gone or misbehaved
        self._closed = False
        siblings.append(self)

    def send(self, frame: bytes) -> None:
        if not self._closed and self._failure is None:
            self._outbox += frame
            self._flush()

    def receive(self, timeout: float) -> bytes:
        """The next frame, once every link's outbox is with the kernel too (so a party that
        goes off to compute leaves no peer waiting for its last send)."""
        end, frame = time.monotonic() + timeout, None
        while True:
            frame = frame if frame is not None else self._next_frame()
            sending = any(link._wants_write() for link in self._siblings)
            if frame is not None and not sending:
                return frame
            if frame is None and self._failure is not None:
                raise self._failure
            remaining = end - time.monotonic()
            if remaining <= 0 and frame is None:
                raise ProtocolError(f"no message from the peer within {timeout:g} s")
            if remaining <= 0:
                raise ProtocolError(f"a peer took none of this party's bytes for {timeout:g} s")
            _serve(self._siblings, remaining)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        end = time.monotonic() + CLOSE_SECONDS
        while self._outbox and self._failure is None and time.monotonic() < end:
            select.select([], [self._sock], [], end - time.monotonic())
            self._flush()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._siblings.remove(self)

    def _next_frame(self) -> bytes | None:
        """The first whole frame of the incoming bytes, if there is one."""
        if len(self._incoming) < HEADER.size:
            return None
        try:
            length = frame_length(bytes(self._incoming[: HEADER.size]))
        except ProtocolError as error:
            self._failure = error
            raise
        if len(self._incoming) < length:
            return None
        frame = bytes(self._incoming[:length])
        del self._incoming[:length]
        return frame

    def _flush(self) -> None:
        """Write what the kernel takes now of the outbox (TLS retries with the same bytes)."""
        try:
            while self._outbox:
                del self._outbox[: self._sock.send(self._outbox)]
        except _RETRY:
            pass
        except OSError:  # ssl.SSLError included: the peer has gone
            self._lose()

    def _fill(self) -> None:
        """Read what has arrived: every record the socket has ready."""
        try:
            while True:
                size = self._sock.recv_into(self._chunk)
                if not size:
                    self._lose()
                    return
                self._incoming += self._chunk[:size]
                if not self._sock.pending():
                    return
        except _RETRY:
            pass
        except OSError:
            self._lose()

    def _lose(self) -> None:
        if self._failure is None:
            self._failure = ProtocolError("peer disconnected")
        self._outbox.clear()

    def _wants_write(self) -> bool:
        return bool(self._outbox) and self._failure is None


def _serve(links: list[TlsLink], timeout: float) -> None:
    """Wait up to ``timeout`` s for any of ``links`` to become readable, flushing every outbox
    meanwhile, and read what arrived (bytes that TLS already holds are read without waiting)."""
    live = [link for link in links if link._failure is None]
    buffered = [link for link in live if link._sock.pending()]
    if buffered:
        readable, writable = buffered, []
    else:
        readable, writable, _ = select.select(
            [link._sock for link in live],
            [link._sock for link in live if link._wants_write()],
            [],
            timeout,
        )
        readable = [link for link in live if link._sock in readable]
        writable = [link for link in live if link._sock in writable]
    for link in writable:
        link._flush()
    for link in readable:
        link._fill()


class TlsNetwork:
    """Party ``index``'s TLS endpoint: a listening socket and, once connected, its links."""

    def __init__(self, index: int, credentials: PartyCredentials, deadline: float = 30.0) -> None:
        self.index, self.deadline = index, deadline
        self._server_context, self._client_context = _contexts(credentials)
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._links: list[TlsLink] = []

    def connect(self, ports: dict[int, int]) -> dict[int, TlsLink]:
        """Links to every other party, given every party's listening port."""
        end = time.monotonic() + self.deadline
        links = {}
        try:
            for peer in sorted(p for p in ports if p < self.index):
                links[peer] = TlsLink(self._dial(peer, ports[peer], end), self._links)
            later = {p for p in ports if p > self.index}
            while later - set(links):
                peer, sock = self._accept(end)
                if peer in later and peer not in links:
                    links[peer] = TlsLink(sock, self._links)
                else:  # only parties with a larger index connect to this one, once
                    sock.close()
        except (OSError, ssl.SSLError) as error:
            for link in links.values():
                link.close()
            if isinstance(error, TimeoutError):
                raise ProtocolError(
                    f"party {self.index}: network setup took over {self.deadline:g} s"
                ) from None
            raise ProtocolError(f"party {self.index}: cannot connect to a peer: {error}") from None
        return links

    def _dial(self, peer: int, port: int, end: float) -> ssl.SSLSocket:
        raw = socket.create_connection((HOST, port), timeout=_left(end))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            return self._client_context.wrap_socket(raw, server_hostname=party_name(peer))
        except BaseException:
            raw.close()
            raise

    def _accept(self, end: float) -> tuple[int, ssl.SSLSocket]:
        """The next peer that connects and completes the handshake, and who it is (-1: unnamed)."""
        while True:
            self._listener.settimeout(_left(end))
            raw, _ = self._listener.accept()
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.settimeout(_left(end))
            try:
                sock = self._server_context.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError) as error:
                raw.close()
                if isinstance(error, TimeoutError):
                    raise
                continue  # a failed handshake (e.g. another session's certificate) is ignored
            certificate = sock.getpeercert() or {}
            names = [
                v for rdn in certificate.get("subject", ()) for k, v in rdn if k == "commonName"
            ]
            suffix = names[0].removeprefix("party-") if names else ""
            return (int(suffix) if suffix.isdigit() else -1), sock

    def close(self) -> None:
        """Stop listening and close any link still open."""
        self._listener.close()
        for link in list(self._links):
            link.close()


def _left(end: float) -> float:
    """Seconds until ``end``; `TimeoutError` once it has passed."""
    remaining = end - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    return remaining
