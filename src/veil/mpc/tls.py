"""TLS links between party processes: mutual TLS 1.3 over loopback sockets, driven by asyncio.

Each party runs an asyncio event loop in a background thread (`TlsNetwork`): it listens on an
ephemeral port, connects to every party with a smaller index and accepts every party with a
larger one, so each pair shares one connection. A reader task per connection cuts the byte
stream into frames (`veil.mpc.channel`) and queues them; the protocol thread sends with a
thread-safe hand-off to the loop, so protocol code stays synchronous.

Authentication: a fresh certificate authority per session (`issue_party_credentials`) signs one
ECDSA P-256 certificate per party, named ``party-<index>``. Both ends present certificates and
check them against that CA; the connecting side checks the name of the party it meant to reach,
the accepting side learns who connected from the certificate, not from anything the peer says.
Threat model: the launcher that issues the certificates is trusted (as the dealer is); a
network attacker can delay or cut traffic (every wait has a deadline) but not read or forge it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from veil.errors import ProtocolError
from veil.mpc.channel import CLOSED, HEADER, QueueLink, frame_length

__all__ = ["PartyCredentials", "TlsLink", "TlsNetwork", "issue_party_credentials", "party_name"]

HOST = "127.0.0.1"


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


class TlsLink(QueueLink):
    """One TLS connection to a peer, served by the network's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reader, writer) -> None:
        super().__init__()
        self._loop, self._writer, self._closed = loop, writer, False
        self._task = loop.create_task(self._read_frames(reader))

    async def _read_frames(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header = await reader.readexactly(HEADER.size)
                rest = await reader.readexactly(frame_length(header) - HEADER.size)
                self.inbox.put(header + rest)
        except ProtocolError as error:
            self.inbox.put(error)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            self.inbox.put(CLOSED)

    def send(self, frame: bytes) -> None:
        if not self._closed:
            self._loop.call_soon_threadsafe(self._writer.write, frame)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        future = asyncio.run_coroutine_threadsafe(self._flush_and_close(), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout=10)

    async def _flush_and_close(self) -> None:
        try:
            await self._writer.drain()
        finally:
            self._writer.close()


class TlsNetwork:
    """Party ``index``'s TLS endpoint: an event loop thread, a listening socket, the links."""

    def __init__(self, index: int, credentials: PartyCredentials, deadline: float = 30.0) -> None:
        self.index, self.deadline = index, deadline
        self._server_context, self._client_context = _contexts(credentials)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._accepted: dict[int, TlsLink] = {}
        self._arrived = asyncio.Event()
        self._server = self._run(
            asyncio.start_server(self._accept, HOST, 0, ssl=self._server_context)
        )
        self.port: int = self._server.sockets[0].getsockname()[1]

    def _run(self, coroutine, timeout: float | None = None):
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout=timeout or self.deadline)
        except TimeoutError:
            future.cancel()
            raise ProtocolError(
                f"party {self.index}: network setup took over {self.deadline:g} s"
            ) from None

    async def _accept(self, reader, writer) -> None:
        certificate = writer.get_extra_info("peercert") or {}
        names = [v for rdn in certificate.get("subject", ()) for k, v in rdn if k == "commonName"]
        suffix = names[0].removeprefix("party-") if names else ""
        peer = int(suffix) if suffix.isdigit() else -1
        if peer <= self.index or peer in self._accepted:
            writer.close()  # only parties with a larger index connect to this one, once
            return
        self._accepted[peer] = TlsLink(self._loop, reader, writer)
        self._arrived.set()

    async def _connect(self, peer: int, port: int) -> TlsLink:
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=self._client_context, server_hostname=party_name(peer)
        )
        return TlsLink(self._loop, reader, writer)

    async def _await_accepted(self, peers: list[int]) -> None:
        while not all(p in self._accepted for p in peers):
            self._arrived.clear()
            await self._arrived.wait()

    def connect(self, ports: dict[int, int]) -> dict[int, TlsLink]:
        """Links to every other party, given every party's listening port."""
        links = {}
        try:
            for peer in sorted(p for p in ports if p < self.index):
                links[peer] = self._run(self._connect(peer, ports[peer]))
            later = [p for p in ports if p > self.index]
            self._run(self._await_accepted(later))
        except (OSError, ssl.SSLError) as error:
            raise ProtocolError(f"party {self.index}: cannot connect to a peer: {error}") from None
        links.update({p: self._accepted[p] for p in later})
        return links

    def close(self) -> None:
        """Stop listening and stop the event loop (links must be closed first)."""
        self._server.close()
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._cancel_readers(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _cancel_readers(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
