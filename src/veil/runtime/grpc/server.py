"""The coordinator's gRPC service: who may join, and the Join / Pull / Push calls.

Admission (mTLS, the default): gRPC has already checked that the peer's certificate is signed
by the deployment's CA; this service then requires TLS 1.3, takes the site's name from the
certificate's common name and admits it only if it is on the allowlist, logging a refusal in
one line (a certificate from another CA never gets past the handshake). Every Pull and Push
names its session in metadata; the session's site must be the certificate's. With
``--insecure`` (plaintext, tests only) a site is whoever it claims to be.

Attestation (``aggregation.tee``): Join names the certificate whose key the enclave's evidence
binds, and Attest answers a site's nonce with that evidence (`veil.runtime.grpc.attestation`).

Bad input: a Push whose chunks exceed the size limit, do not parse, or do not answer an open
task correctly (wrong round, late, wrong kind, wrong shapes, ...) is answered INVALID_ARGUMENT
with the reason, and the service goes on serving everyone else. Nothing secret (keys, session
tokens) is ever logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc

from veil.errors import ConfigError, ProtocolError
from veil.runtime.certs import Credentials
from veil.runtime.grpc import veil_pb2 as pb
from veil.runtime.grpc import veil_pb2_grpc as rpc
from veil.runtime.grpc.attestation import EnclaveEndpoint, EnclaveNotReady
from veil.runtime.grpc.board import TaskBoard, UnknownSession
from veil.runtime.grpc.wire import SESSION_KEY, Limits, from_chunks, server_credentials, to_chunks

log = logging.getLogger("veil.server")
IDENTITY_KEY_BYTES = 32  # Ed25519 public key
TLS_VERSION = "TLSv1.3"


@dataclass(frozen=True)
class Admission:
    """Which sites may join: ``names[i]`` is client i of the federation; ``allowed`` ⊆ names.
    ``secure`` False: plaintext, no authentication (tests only)."""

    names: Sequence[str]
    allowed: frozenset[str]
    secure: bool = True


class CoordinatorService(rpc.CoordinatorServicer):
    """Join, Pull and Push on top of a `TaskBoard`; Attest for the hosted enclave, if any."""

    def __init__(
        self,
        board: TaskBoard,
        admission: Admission,
        config_json: str,
        encryption: pb.EncryptionKey | None = None,
        limits: Limits | None = None,
        poll_seconds: float = 5.0,
        attestation: EnclaveEndpoint | None = None,
    ):
        self.board = board
        self.admission = admission
        self.config_json = config_json
        self.encryption = encryption
        self.limits = limits or Limits()
        self.poll_seconds = poll_seconds
        self.attestation = attestation

    def Join(self, request: pb.JoinRequest, context: grpc.ServicerContext) -> pb.JoinReply:
        site = self._admit(context, request.site)
        if len(request.identity_key) != IDENTITY_KEY_BYTES:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"identity_key must be a {IDENTITY_KEY_BYTES}-byte Ed25519 public key",
            )
        index = list(self.admission.names).index(site)
        token = self.board.join(index, bytes(request.identity_key))
        log.info("site %s joined (client %d) from %s", site, index, context.peer())
        attested = {} if self.attestation is None else self.attestation.join_reply_fields()
        return pb.JoinReply(
            session=token,
            site_index=index,
            config_json=self.config_json,
            encryption=self.encryption,
            **attested,
        )

    def Attest(self, request: pb.AttestRequest, context: grpc.ServicerContext) -> pb.AttestReply:
        self._session(context)
        if self.attestation is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "this run has no attested aggregator")
        try:
            return pb.AttestReply(evidence=self.attestation.evidence(bytes(request.nonce)))
        except EnclaveNotReady as error:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        except ConfigError as error:  # a nonce that is not 32 bytes
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))

    def Pull(self, request: pb.PullRequest, context: grpc.ServicerContext) -> Iterator[pb.Chunk]:
        token = self._session(context)
        remaining = context.time_remaining()
        wait = self.poll_seconds if remaining is None else min(self.poll_seconds, remaining - 1)
        task = self.board.next_task(token, max(wait, 0.0))
        yield from to_chunks(task if task is not None else pb.Task(idle=pb.Idle()), self.limits)

    def Push(self, chunks: Iterator[pb.Chunk], context: grpc.ServicerContext) -> pb.PushReply:
        token = self._session(context)
        try:
            reply = from_chunks(chunks, pb.Reply, self.limits)
            self.board.answer(token, reply)
        except UnknownSession as error:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        except ProtocolError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"refused reply: {error}")
        return pb.PushReply()

    # -- admission ---------------------------------------------------------------------------

    def _admit(self, context: grpc.ServicerContext, claimed: str) -> str:
        """The site a call comes from, or abort: mTLS certificate name on the allowlist (and
        equal to ``claimed``, if given), TLS 1.3; plaintext: ``claimed`` on the allowlist."""
        allowed = self.admission.allowed
        if not self.admission.secure:
            if claimed not in allowed:
                self._refuse(context, claimed, "it is not on the allowlist")
            return claimed
        auth = context.auth_context()
        version = b"".join(auth.get("ssl_tls_version", [])).decode(errors="replace")
        names = auth.get("x509_common_name", [])
        site = names[0].decode(errors="replace") if names else ""
        if version != TLS_VERSION:
            self._refuse(
                context,
                site,
                f"{TLS_VERSION} is required (the connection uses {version or 'no TLS'})",
            )
        if site not in allowed:
            self._refuse(context, site, "its certificate is valid but it is not on the allowlist")
        if claimed and claimed != site:
            self._refuse(context, site, f"its certificate is for {site!r}, not {claimed!r}")
        return site

    def _session(self, context: grpc.ServicerContext) -> bytes:
        """The call's session token (its site admitted as in `_admit`), or abort."""
        token = dict(context.invocation_metadata()).get(SESSION_KEY, b"")
        try:
            index = self.board.site_of(token)
        except UnknownSession as error:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        site = self.admission.names[index]
        if self.admission.secure:
            self._admit(context, site)
        return token

    @staticmethod
    def _refuse(context: grpc.ServicerContext, site: str, reason: str) -> None:
        log.warning("refused site %r from %s: %s", site, context.peer(), reason)
        context.abort(grpc.StatusCode.PERMISSION_DENIED, f"site {site!r} refused: {reason}")


def start_server(
    service: CoordinatorService,
    address: str,
    credentials: Credentials | None,
    limits: Limits | None = None,
) -> tuple[grpc.Server, int]:
    """Start serving ``service`` on ``address`` (mTLS with ``credentials``, plaintext when None);
    return the server and the bound port (``host:0`` picks a free one)."""
    limits = limits or Limits()
    workers = 2 * len(service.admission.names) + 8  # a long poll and a push per site, and spare
    server = grpc.server(futures.ThreadPoolExecutor(workers), options=limits.options())
    rpc.add_CoordinatorServicer_to_server(service, server)
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, server_credentials(credentials))
    except RuntimeError as error:
        raise ConfigError(f"cannot listen on {address}: {error}") from None
    if port == 0:
        raise ConfigError(f"cannot listen on {address} (in use, or not an address of this host)")
    server.start()
    return server, port
