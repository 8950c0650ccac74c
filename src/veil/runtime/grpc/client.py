"""A site of a deployment (``veil client``): it joins the coordinator, trains on its own rows,
runs the client side of the encoder chain and sends only the encoded update.

The site learns the run config from the coordinator when it joins, builds the same plan as the
simulator from it, and trains with the simulator's own engines on its rows only (the demo
derives each site's rows from the config's data set; a real site would load its own file).
Under SecAgg+ its quantized, noised update never leaves the site unmasked: the site answers the
protocol's stages with the same `SecAggClient` the simulator uses, after checking that the
coordinator's round parameters are the ones the run config promises. Its DP noise comes from
its own cryptographically seeded generator. Under ``aggregation.tee`` it attests the enclave
before every update (`SiteAttestation`, `veil.runtime.grpc.attestation`) and sends the update
sealed to it; a failed check refuses the task, and nothing of the update leaves.

Networks fail: every call is retried with exponential backoff; when the coordinator restarts,
the site notices its session is gone and joins again by itself; a restarted site simply joins
again (a round in progress treats it as dropped).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import numpy as np
from cryptography.hazmat.primitives.serialization import Encoding

from veil.config import parse_config
from veil.errors import ConfigError, ProtocolError
from veil.experiment import build_experiment
from veil.he.links import EncryptedUpdates, he_encoder
from veil.randomness import noise_generator
from veil.runtime.certs import Credentials
from veil.runtime.grpc import codec
from veil.runtime.grpc import veil_pb2 as pb
from veil.runtime.grpc import veil_pb2_grpc as rpc
from veil.runtime.grpc.attestation import (
    attested_certificate,
    read_round_counter,
    sealed_update,
    site_policy,
    write_round_counter,
)
from veil.runtime.grpc.wire import (
    SESSION_KEY,
    Backoff,
    Limits,
    channel_credentials,
    from_chunks,
    to_chunks,
    with_retries,
)
from veil.secagg.client import SecAggClient
from veil.secagg.keys import new_identity, public_identity
from veil.secagg.links import RingUpdates
from veil.secagg.messages import STAGES, RoundSetup
from veil.secagg.simulate import answer
from veil.tee.config import TeeConfig
from veil.tee.errors import AttestationError
from veil.tee.evidence import FreshNonces, VerifiedAggregator, verify_aggregator
from veil.tee.verifier import AttestationPolicy

log = logging.getLogger("veil.client")
NEEDS_MTLS = (
    "this run's aggregator is attested (aggregation.tee), which needs mTLS (--certs): the "
    "evidence binds the server certificate's key"
)


@dataclass(frozen=True)
class SiteOptions:
    """How a site reaches its coordinator. ``credentials`` None means plaintext (tests only).

    Attested aggregator: ``tee`` is the ``aggregation.tee`` policy the site accepts (None: the
    coordinator's config's); ``round_counter_file`` keeps the highest enclave round counter the
    site has seen across its own restarts (None: in memory only)."""

    address: str
    site: str
    credentials: Credentials | None
    limits: Limits = field(default_factory=Limits)
    backoff: Backoff = field(default_factory=Backoff)
    give_up_after: float = 300.0  # seconds without reaching the coordinator before giving up
    rpc_timeout: float = 60.0  # deadline of one call (a long poll returns well before it)
    tee: TeeConfig | None = None
    round_counter_file: Path | None = None


class Connection:
    """The site's channel to the coordinator; every call retried with backoff."""

    def __init__(self, options: SiteOptions):
        self.options = options
        channel_options = options.limits.options()
        if options.credentials is None:
            self.channel = grpc.insecure_channel(options.address, options=channel_options)
        else:
            credentials = channel_credentials(options.credentials)
            self.channel = grpc.secure_channel(options.address, credentials, channel_options)
        self.stub = rpc.CoordinatorStub(self.channel)

    def join(self, identity_key: bytes) -> pb.JoinReply:
        request = pb.JoinRequest(site=self.options.site, identity_key=identity_key)
        return self._retry(lambda: self.stub.Join(request, timeout=self.options.rpc_timeout))

    def pull(self, session: bytes) -> pb.Task:
        def call() -> pb.Task:
            chunks = self.stub.Pull(
                pb.PullRequest(), timeout=self.options.rpc_timeout, metadata=_metadata(session)
            )
            return from_chunks(chunks, pb.Task, self.options.limits)

        return self._retry(call)

    def push(self, session: bytes, reply: pb.Reply) -> None:
        self._retry(
            lambda: self.stub.Push(
                to_chunks(reply, self.options.limits),
                timeout=self.options.rpc_timeout,
                metadata=_metadata(session),
            )
        )

    def attest(self, session: bytes, nonce: bytes) -> bytes:
        request = pb.AttestRequest(nonce=nonce)
        reply = self._retry(
            lambda: self.stub.Attest(
                request, timeout=self.options.rpc_timeout, metadata=_metadata(session)
            )
        )
        return reply.evidence

    def close(self) -> None:
        self.channel.close()

    def _retry(self, call):
        def note(error: grpc.RpcError, delay: float) -> None:
            log.info("coordinator unreachable (%s); retrying in %.1f s", error.code().name, delay)

        return with_retries(call, self.options.backoff, self.options.give_up_after, note)


def _metadata(session: bytes) -> tuple[tuple[str, bytes], ...]:
    return ((SESSION_KEY, session),)


class SiteAttestation:
    """A site's side of the attested aggregator, kept for its whole run: its own nonces, the
    highest enclave round counter it has seen (in ``options.round_counter_file`` too, if
    given), and a channel that trusts only the certificate the evidence must bind."""

    def __init__(self, options: SiteOptions):
        if options.credentials is None:
            raise ConfigError(NEEDS_MTLS)
        self.options = options
        self.nonces = FreshNonces()
        self.last_round = read_round_counter(options.round_counter_file)
        self.pinned: Connection | None = None
        self.certificate = None  # the pinned certificate (x509)
        self.session = b""

    def pin(self, joined: pb.JoinReply) -> None:
        """After a Join: talk to the enclave over a channel that trusts the certificate the
        coordinator names, and only it (a handshake with any other key fails)."""
        certificate = attested_certificate(joined.attested_certificate)
        if certificate != self.certificate:
            self.close()
            pem = certificate.public_bytes(Encoding.PEM)
            credentials = replace(self.options.credentials, authority=pem)
            patience = min(self.options.give_up_after, self.options.rpc_timeout)
            self.pinned = Connection(
                replace(self.options, credentials=credentials, give_up_after=patience)
            )
            self.certificate = certificate
        self.session = joined.session

    def verify(self, policy: AttestationPolicy) -> VerifiedAggregator:
        """Attest the enclave with a fresh nonce on the pinned channel, against ``policy``;
        `ProtocolError` saying why the site refuses."""
        nonce = self.nonces.issue()
        try:
            evidence = self.pinned.attest(self.session, nonce)
            verified = verify_aggregator(
                evidence,
                nonce,
                self.certificate.public_key(),  # the key every handshake on `pinned` proved
                policy,
                last_round=self.last_round,
                nonces=self.nonces,
            )
        except AttestationError as refusal:
            raise ProtocolError(
                f"site {self.options.site} refuses to send its update: "
                f"{type(refusal).__name__}: {refusal}"
            ) from refusal
        except grpc.RpcError as error:
            raise ProtocolError(
                f"site {self.options.site} refuses to send its update: the enclave could not "
                f"be attested ({error.code().name}: {error.details()})"
            ) from None
        self.last_round = verified.round_counter
        write_round_counter(self.options.round_counter_file, self.last_round)
        return verified

    def close(self) -> None:
        if self.pinned is not None:
            self.pinned.close()


class SiteWorker:
    """What a site does with its tasks: train and encode, answer SecAgg+ stages; under
    ``aggregation.tee``, attest the enclave (with ``attestation``) and seal to it."""

    def __init__(
        self,
        joined: pb.JoinReply,
        site: str,
        identity,
        attestation: SiteAttestation | None = None,
    ):
        config = parse_config(json.loads(joined.config_json))
        self.joined_as = (joined.config_json, joined.site_index)
        self.index = int(joined.site_index)
        self.attestation, self.policy = attestation, None
        if config.aggregation.tee is not None:
            if attestation is None:
                raise ConfigError(NEEDS_MTLS)
            self.policy = site_policy(config, attestation.options.tee, joined)
        # The site runs the inner encoder; the key holder's or enclave's key comes below.
        aggregation = config.aggregation.model_copy(update={"tee": None})
        own = config.model_copy(update={"encryption": None, "aggregation": aggregation})
        experiment = build_experiment(own)
        names = [c.name for c in experiment.data.clients]
        if self.index >= len(names) or names[self.index] != site:
            raise ConfigError(f"the coordinator assigned client id {self.index}, not site {site!r}")
        self.plan = experiment.plan
        if config.encryption is not None:
            settings = codec.encryption_key_from_proto(joined.encryption)
            self.plan = replace(self.plan, encoder=he_encoder(settings))
        self.secure = experiment.secure.settings if config.secure_aggregation else None
        self.transport = experiment.transport
        self.like = experiment.state.params
        self.length = sum(v.numel() for v in self.like.values())
        self.encoder_state = self.plan.encoder.init(self.like)
        hidden = config.secure_aggregation or config.encryption  # the server sees only a sum
        self.withhold_loss = (config.privacy or hidden) is not None
        # Under a secure sum, FedAvg weights are not applied: the row count stays on the site
        # unless sample-level DP must account for it (then it is public by assumption).
        self.disclose_rows = hidden is None or self.plan.local.dp is not None
        self.identity = identity
        self.rings: dict[int, np.ndarray] = {}  # SecAgg+: this round's quantized update
        self.secagg: SecAggClient | None = None

    def handle(self, task: pb.Task) -> pb.Reply:
        """The reply to a training or SecAgg+ task (a refusal if the site must not do it)."""
        reply = pb.Reply(task_id=task.task_id, round=task.round)
        try:
            if task.HasField("train"):
                reply.train.CopyFrom(self.train(task))
            else:
                reply.secagg.CopyFrom(self.secagg_step(task))
        except ProtocolError as refusal:
            log.warning("round %d: refusing the task: %s", task.round, refusal)
            reply.refusal.reason = str(refusal)
        return reply

    def train(self, task: pb.Task) -> pb.TrainResult:
        params = codec.params_from_proto(task.train.params, self.like)
        device = next(iter(params.values())).device
        stream = (task.round << 20) + self.index + 1  # distinct streams only matter in tests
        key = noise_generator(self.plan.noise_seed_for_testing, stream, device)
        updates, self.encoder_state, _, losses = self.transport.collect(
            params, np.array([self.index]), task.round, self.plan, self.encoder_state, key
        )
        rows = int(self.transport.pool.sizes[self.index])
        loss = math.nan if self.withhold_loss else float(losses[0])
        result = pb.TrainResult(num_rows=rows if self.disclose_rows else 1, loss=loss)
        if isinstance(updates, RingUpdates):
            self.rings = {task.round: updates.ring[0]}
            result.ring.SetInParent()
        elif isinstance(updates, EncryptedUpdates):
            result.encrypted.CopyFrom(codec.encrypted_update_to_proto(updates.messages[0]))
        elif self.policy is not None:
            verified = self.attestation.verify(self.policy)
            log.info("round %d: %s", task.round, verified.describe())
            result.sealed.CopyFrom(sealed_update(updates, verified))
        else:
            own = {k: v[0] for k, v in updates.deltas.items()}
            result.plain.deltas.extend(codec.params_to_proto(own))
        log.info("round %d: trained on %d rows, sent a %s update", task.round, rows, _kind(result))
        return result

    def secagg_step(self, task: pb.Task) -> pb.SecAggMessage:
        stage, request, identities = codec.request_from_proto(task.secagg)
        if stage == STAGES[0]:
            self._check_setup(request, identities)
            self.secagg = SecAggClient(self.index, self.identity, request, identities)
        elif self.secagg is None:
            raise ProtocolError("no SecAgg+ round in progress on this site")
        message = answer(self.secagg, stage, request, self.rings.get(task.round))
        return codec.message_to_proto(message)

    def _check_setup(self, setup: RoundSetup, identities: dict[int, bytes]) -> None:
        """Refuse a round whose parameters are weaker than the run config's (SecAgg+)."""
        s = self.secure
        if s is None:
            raise ProtocolError("this run has no secure aggregation")
        promised = {
            "threshold": s.threshold,
            "min_survivors": s.min_survivors,
            "bits": s.encoding.bits,
            "hybrid": s.hybrid,
            "length": self.length,
        }
        for name, value in promised.items():
            if getattr(setup, name) != value:
                raise ProtocolError(
                    f"the coordinator's SecAgg+ {name} is {getattr(setup, name)}, "
                    f"the run config's {value}"
                )
        if setup.neighbours > s.neighbours:
            raise ProtocolError(f"more neighbours ({setup.neighbours}) than the run config's")
        if identities.get(self.index) != public_identity(self.identity):
            raise ProtocolError("the round does not list this site with its own identity key")
        if not set(setup.clients) <= set(identities):
            raise ProtocolError("the round lacks the identity key of one of its clients")


def _kind(result: pb.TrainResult) -> str:
    kinds = {"plain": "plain", "ring": "SecAgg+ (held)", "encrypted": "encrypted"}
    return kinds.get(result.WhichOneof("update"), "sealed (to the enclave)")


def run_site(options: SiteOptions, stop: threading.Event | None = None) -> str:
    """Take part in the coordinator's run until it finishes; return its closing reason.

    Raises `ConfigError` if the coordinator refuses this site, `ProtocolError` if it stays
    unreachable for ``options.give_up_after`` seconds."""
    identity = new_identity()
    connection = Connection(options)
    attestation = SiteAttestation(options) if options.credentials is not None else None
    worker: SiteWorker | None = None
    session: bytes | None = None
    try:
        while stop is None or not stop.is_set():
            try:
                if session is None:
                    joined = connection.join(public_identity(identity))
                    session = joined.session
                    if worker is None or worker.joined_as != (
                        joined.config_json,
                        joined.site_index,
                    ):
                        worker = SiteWorker(joined, options.site, identity, attestation)
                    if worker.policy is not None:
                        worker.attestation.pin(joined)
                    log.info("site %s joined the coordinator at %s", options.site, options.address)
                task = connection.pull(session)
                kind = task.WhichOneof("kind")
                if kind == "finish":
                    log.info("the coordinator finished: %s", task.finish.reason)
                    return task.finish.reason
                if kind in ("train", "secagg"):
                    connection.push(session, worker.handle(task))
            except grpc.RpcError as error:
                code = error.code()
                if code == grpc.StatusCode.FAILED_PRECONDITION:
                    session = None  # the coordinator restarted: join again
                elif code == grpc.StatusCode.INVALID_ARGUMENT:
                    log.warning("the coordinator refused a reply: %s", error.details())
                elif code in (
                    grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.UNAUTHENTICATED,
                ):
                    raise ConfigError(
                        f"the coordinator refused site {options.site!r}: {error.details()}"
                    ) from None
                else:
                    raise ProtocolError(
                        f"cannot reach the coordinator at {options.address} "
                        f"({code.name}: {error.details()})"
                    ) from None
        return "stopped"
    finally:
        connection.close()
        if attestation is not None:
            attestation.close()
