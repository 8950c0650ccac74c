"""`GrpcTransport`: `run_round`'s transport when the clients are sites on a network.

``collect`` sends the round's global parameters to the sampled sites and waits (up to the
round deadline) for their encoded updates; a site that does not answer in time is dropped. The
sites train and run the client encoder chain themselves (`veil.runtime.grpc.client`), so what
arrives is already encoded:

- plain deltas (FedAvg, DP-FedAvg after the site's clipping) → `ClientUpdates`;
- SecAgg+: each site keeps its quantized update and only says it is ready → `RemoteRingUpdates`,
  whose `secure_sum` runs the protocol over the network with `veil.secagg.simulate.drive_round`,
  the same driver and `SecAggServer` as the simulator, each stage under its own deadline;
- HE: ciphertexts → `EncryptedUpdates`, added by the server and decrypted by the key holder;
- TEE: HPKE ciphertexts for the attested enclave → `SealedUpdates`, opened only inside it. The
  enclave seals one state per round, so round r's updates are sealed for round counter r − 1.

Every reply is decoded and checked as it arrives (names, shapes, finite values, the clip norm
under client-level DP, sender ids), so one bad site cannot break the round for the others.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from veil.errors import ConfigError, ProtocolError
from veil.fl.links import ClientUpdates, Events
from veil.he.links import EncryptedUpdates
from veil.params import Params, flatten_stacked, leading_axis_l2_norms, stack
from veil.privacy.client_dp import NORM_SLACK
from veil.runtime.dpsgd_local import client_dpsgd_events
from veil.runtime.grpc import codec
from veil.runtime.grpc import veil_pb2 as pb
from veil.runtime.grpc.board import TaskBoard
from veil.secagg.links import RingUpdates
from veil.secagg.messages import STAGES, ClientMessage, RoundSetup
from veil.secagg.simulate import Federation, SecAggReport, drive_round
from veil.tee.channel import SealedUpdates, ciphertext_bytes

log = logging.getLogger("veil.server")
UPDATE_KINDS = ("plain", "ring", "encrypted", "sealed")
MAX_ROWS = 2**40


@dataclass(frozen=True)
class SiteResult:
    """A site's checked answer to a training task."""

    num_rows: int
    loss: float
    update: Any  # Params (plain), None (ring), EncryptedUpdate (encrypted), bytes (sealed)


@dataclass
class NetworkParties:
    """The sites of one SecAgg+ round, reached through the task board (`simulate.Parties`)."""

    board: TaskBoard
    round_index: int
    identities: dict[int, bytes]  # the sites' identity keys when the round began
    timeout: float
    sent: dict[int, int] = field(default_factory=dict)  # bytes each site sent
    setup: RoundSetup | None = None

    def exchange(self, stage: str, requests: Mapping[int, Any]) -> dict[int, ClientMessage]:
        if stage == STAGES[0]:  # every request of the first stage is the round's setup
            self.setup = next(iter(requests.values()), None)
        tasks = {}
        for site, request in requests.items():
            message = codec.request_to_proto(request, self.identities)
            tasks[site] = (
                pb.Task(round=self.round_index, secagg=message),
                self._check(stage, site),
            )
        answers = self.board.exchange(tasks, self.timeout)
        for site, (_, size) in answers.items():
            self.sent[site] = self.sent.get(site, 0) + size
        return {site: message for site, (message, _) in answers.items()}

    def _check(self, stage: str, site: int):
        def check(reply: pb.Reply) -> tuple[ClientMessage, int] | None:
            kind = reply.WhichOneof("kind")
            if kind == "refusal":
                return None
            if kind != "secagg":
                raise ProtocolError(f"expected a SecAgg+ message for stage '{stage}', got {kind}")
            got, message = codec.message_from_proto(reply.secagg)
            if got != stage:
                raise ProtocolError(f"expected a message of stage '{stage}', got '{got}'")
            if message.sender != site:
                raise ProtocolError(f"message claims sender {message.sender}, sent by {site}")
            if message.round_id != self.setup.round_id:
                raise ProtocolError("SecAgg+ message from another round")
            return message, reply.ByteSize()

        return check


@dataclass(frozen=True)
class RemoteRingUpdates(RingUpdates):
    """SecAgg+ updates still held by the sites (``ring`` is empty): `secure_sum` fetches them
    masked, over the network."""

    parties: NetworkParties | None = None

    def secure_sum(
        self, setup: RoundSetup, federation: Federation, dropouts: dict[int, str]
    ) -> SecAggReport:
        """The protocol among the sites; ``federation`` and simulated ``dropouts`` belong to
        the simulator and play no part (identity keys are the sites', dropouts are real)."""
        total, survivors, rejected, seconds = drive_round(
            setup, self.parties.identities, self.parties
        )
        return SecAggReport(total, survivors, seconds, {}, dict(self.parties.sent), rejected)


@dataclass
class GrpcTransport:
    """`Transport` over gRPC: the federation's clients are the sites on ``board``.

    ``update_kind`` is what the run's encoder chain sends (one of ``UPDATE_KINDS``);
    ``max_update_norm`` bounds plain updates (the clip norm of client-level DP); a round with
    fewer than ``min_updates`` updates fails (a secure sum's minimum), releasing nothing."""

    board: TaskBoard
    names: list[str]
    update_kind: str = "plain"
    round_timeout: float = 120.0
    stage_timeout: float = 30.0
    max_update_norm: float | None = None
    min_updates: int = 0
    last_engine: str = "grpc"

    def __post_init__(self) -> None:
        if self.update_kind not in UPDATE_KINDS:
            raise ConfigError(
                f"update_kind must be one of {list(UPDATE_KINDS)} (got {self.update_kind!r})"
            )

    @property
    def num_clients(self) -> int:
        return len(self.names)

    def collect(
        self,
        params: Params,
        client_ids: np.ndarray,
        round_index: int,
        plan,
        encoder_state: Any,
        key: torch.Generator,
    ) -> tuple[ClientUpdates, Any, Events, Tensor]:
        """Train on the sampled sites; their encoded updates, the (unchanged) encoder state,
        local DP-SGD events and each site's reported loss. Stateful encoders cannot run on the
        sites, so ``encoder_state`` is passed through."""
        like = {k: v.detach().cpu() for k, v in params.items()}
        train = pb.Train(params=codec.params_to_proto(like))
        tasks = {
            int(c): (pb.Task(round=round_index, train=train), self._check_train(like, int(c)))
            for c in client_ids
        }
        answers = self.board.exchange(tasks, self.round_timeout)
        ids = np.array(sorted(answers), dtype=np.int64)
        dropped = [self.names[c] for c in sorted(set(tasks) - set(answers))]
        log.info(
            "round %d: %d of %d sampled sites sent an update%s",
            round_index,
            len(ids),
            len(tasks),
            f" (dropped: {', '.join(dropped)})" if dropped else "",
        )
        if len(ids) < self.min_updates:
            raise ProtocolError(
                f"round {round_index}: {len(ids)} sites sent an update, fewer than the "
                f"{self.min_updates} the secure sum needs"
            )
        results = [answers[c] for c in ids]
        device = next(iter(params.values())).device
        weights = torch.tensor([r.num_rows for r in results], dtype=torch.float32, device=device)
        losses = torch.tensor([r.loss for r in results], dtype=torch.float32, device=device)
        id_tensor = torch.as_tensor(ids, device=device)
        template = {k: torch.zeros_like(v) for k, v in params.items()}
        if self.update_kind == "ring":
            parties = NetworkParties(
                self.board, round_index, self.board.identities(), self.stage_timeout
            )
            empty = np.zeros((len(ids), 0), dtype=np.uint64)
            updates = RemoteRingUpdates({}, weights, id_tensor, empty, template, parties=parties)
        elif self.update_kind == "encrypted":
            messages = tuple(r.update for r in results)
            updates = EncryptedUpdates({}, weights, id_tensor, messages, template)
        elif self.update_kind == "sealed":
            shell = ClientUpdates({}, weights, id_tensor)
            ciphertexts = tuple(r.update for r in results)
            dtype = _row_dtype(like)
            counter = round_index - 1
            updates = SealedUpdates(
                {}, weights, id_tensor, ciphertexts, shell, dtype, template, counter
            )
        else:
            deltas = (
                {k: v.to(device) for k, v in stack([r.update for r in results]).items()}
                if results
                else {k: v.new_zeros((0, *v.shape)) for k, v in params.items()}
            )
            updates = ClientUpdates(deltas, weights, id_tensor)
        events: Events = []
        if plan.local.dp is not None and len(ids):
            sizes = np.array([r.num_rows for r in results])
            events = client_dpsgd_events(ids, sizes, plan.local, self.names)
        return updates, encoder_state, events, losses

    def _check_train(self, like: Params, site: int):
        def check(reply: pb.Reply) -> SiteResult | None:
            kind = reply.WhichOneof("kind")
            if kind == "refusal":
                return None
            if kind != "train":
                raise ProtocolError(f"expected a training result, got {kind}")
            result = reply.train
            if not 1 <= result.num_rows <= MAX_ROWS:
                raise ProtocolError(f"num_rows must be in [1, 2^40] (got {result.num_rows})")
            if not (math.isnan(result.loss) or math.isfinite(result.loss)):
                raise ProtocolError("the reported loss is infinite")
            sent = result.WhichOneof("update")
            if sent != self.update_kind:
                raise ProtocolError(
                    f"this run's encoder sends {self.update_kind} updates, got {sent}"
                )
            update = self._update(result, like, site, reply.round)
            return SiteResult(result.num_rows, result.loss, update)

        return check

    def _update(self, result: pb.TrainResult, like: Params, site: int, round_index: int) -> Any:
        """The checked update of ``site``'s reply to the task of round ``round_index`` (the
        board has checked that the reply is for that round)."""
        if self.update_kind == "ring":
            return None
        if self.update_kind == "sealed":
            return _sealed(result.sealed, like, round_index)
        if self.update_kind == "encrypted":
            update = codec.encrypted_update_from_proto(result.encrypted)
            if update.sender != site:
                raise ProtocolError(f"encrypted update claims sender {update.sender}, not {site}")
            return update
        deltas = codec.params_from_proto(result.plain.deltas, like)
        if self.max_update_norm is not None:
            norm = float(leading_axis_l2_norms({k: v[None] for k, v in deltas.items()})[0])
            if norm > self.max_update_norm * (1 + NORM_SLACK):
                raise ProtocolError(
                    f"update norm {norm:.4g} exceeds the clip norm {self.max_update_norm:g}"
                )
        return deltas


def _row_dtype(like: Params) -> str:
    """The numpy dtype of a flattened update shaped like ``like`` (what the sites seal)."""
    empty = {k: v.detach().cpu()[None][:0] for k, v in like.items()}
    return flatten_stacked(empty).numpy().dtype.str


def _sealed(message: pb.SealedUpdate, like: Params, round_index: int) -> bytes:
    """The ciphertext of a sealed update, if it is for this round's enclave counter and has
    the length of an update shaped like ``like`` (the enclave checks the rest)."""
    if message.round_counter != round_index - 1:
        raise ProtocolError(
            f"update sealed for enclave round counter {message.round_counter}, not "
            f"{round_index - 1}: attest the enclave again"
        )
    expected = ciphertext_bytes(like, _row_dtype(like))
    if len(message.ciphertext) != expected:
        raise ProtocolError(
            f"sealed update of {len(message.ciphertext)} bytes, not the {expected} of this model"
        )
    return bytes(message.ciphertext)
