"""The coordinator process (``veil server``): the experiment's rounds over the network,
crash-safe.

`run_rounds` runs the rounds of a built experiment through any transport, committing each
round by the order of `veil.runtime.checkpoint` (checkpoint, then ledger entry, then publish),
and resumes from the last committed round when started again on the same output folder: a
server killed at any moment (``kill -9``) and restarted loses at most the round in flight, and
ε is neither lost nor counted twice. A round that fails (e.g. SecAgg+ with too few survivors)
released nothing and is tried again, up to ``max_failed_rounds`` times.

`serve` wires the gRPC service to it: it waits for ``min_clients`` connected sites before each
round, runs it with deadlines (late sites are dropped), writes metrics.json and the report as
`veil run` does, and finally tells the sites to stop. With ``aggregation.tee`` it hosts the
enclave: the enclave takes up the sealed state of the checkpoint it resumes from before it
answers any attestation.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from veil.config import DeploymentConfig, RunConfig
from veil.errors import ConfigError, PrivacyBudgetExceeded, ProtocolError
from veil.experiment import (
    Experiment,
    build_experiment,
    client_records,
    evaluate,
    open_ledger,
    prepare_output_directory,
    round_record,
    run_claim,
    torch_threads,
)
from veil.fl import run_round
from veil.fl.links import Events
from veil.fl.round import RoundMetrics, ServerState, Transport
from veil.privacy.ledger import PrivacyLedger
from veil.report import write_json_atomic, write_report
from veil.report.attached import clear_sections
from veil.runtime.certs import Credentials
from veil.runtime.checkpoint import Checkpoint, CheckpointStore, config_digest
from veil.runtime.grpc import codec
from veil.runtime.grpc.attestation import EnclaveEndpoint
from veil.runtime.grpc.board import TaskBoard
from veil.runtime.grpc.server import Admission, CoordinatorService, start_server
from veil.runtime.grpc.transport import GrpcTransport
from veil.runtime.grpc.wire import Limits

log = logging.getLogger("veil.server")


class StopRun(Exception):
    """Raised by ``before_round`` to end a run cleanly between rounds."""


class HeldEvents:
    """An `EventSink` that holds a round's DP events until its new state is checkpointed."""

    def __init__(self) -> None:
        self.events: Events = []

    def record(self, round_index: int, events: Events) -> None:
        self.events = list(events)


def run_rounds(
    experiment: Experiment,
    transport: Transport,
    out: str | Path,
    before_round: Callable[[int], None] | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    max_failed_rounds: int = 5,
    retry_pause: float = 1.0,
    on_resumed: Callable[[Experiment], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the experiment's rounds through ``transport``; write OUT/metrics.json
    after every round, the ledger and checkpoints as they commit, and the report at the end.
    ``before_round`` may raise `StopRun` to end the run there (``final.stopped`` says why);
    ``on_resumed`` sees the experiment once its state is the one the run starts from."""
    started = time.perf_counter()
    config = experiment.config
    out = prepare_output_directory(Path(out))
    ledger = open_ledger(experiment, out)
    store = CheckpointStore(out / "checkpoints", config_digest(config))
    records, sent = resume(experiment, store, ledger, out)
    if on_resumed is not None:
        on_resumed(experiment)
    metrics: dict[str, Any] = {
        "config": config.model_dump(mode="json"),
        "rounds": records,
        "final": None,
    }
    write_json_atomic(metrics, out / "metrics.json")
    stopped, failures = None, 0
    with torch_threads(config.runtime.threads):
        while experiment.state.round_index < config.federation.rounds:
            round_index = experiment.state.round_index + 1
            held = HeldEvents()
            try:
                if before_round is not None:
                    before_round(round_index)
                state, round_metrics = run_round(experiment.state, experiment.plan, transport, held)
                record = commit_round(
                    experiment, state, round_metrics, held.events, store, ledger, records, sent
                )
            except (StopRun, PrivacyBudgetExceeded) as end:
                stopped = str(end)
                break
            except ProtocolError as failure:  # nothing was released: try the round again
                failures += 1
                log.warning("round %d failed (%s): attempt %d", round_index, failure, failures)
                if failures >= max_failed_rounds:
                    stopped = f"round {round_index} failed {failures} times: {failure}"
                    break
                time.sleep(retry_pause)
                continue
            failures = 0
            write_json_atomic(metrics, out / "metrics.json")
            log.info("round %d done: accuracy %.4f", round_index, record["accuracy"])
            if on_round is not None:
                on_round(record)
        # Per-client figures (sizes, accuracies) are not covered by a DP guarantee: withheld.
        metrics["clients"] = [] if ledger else client_records(experiment)
        metrics["final"] = final_summary(experiment, ledger, stopped, sent, transport, started)
    write_json_atomic(metrics, out / "metrics.json")
    write_report(metrics, out / "report.html")
    return metrics


def resume(
    experiment: Experiment, store: CheckpointStore, ledger: PrivacyLedger | None, out: Path
) -> tuple[list[dict[str, Any]], list[float]]:
    """Put the last committed checkpoint's state into ``experiment`` (if there is one); return
    the metrics records and bytes sent of the rounds it covers."""
    device = next(iter(experiment.state.params.values())).device
    resumed = store.resume(ledger, device)
    if resumed is None:
        clear_sections(out)  # attacks and audits of an earlier run in this folder
        return [], []
    experiment.state = resumed.state
    if resumed.rounds and ledger is not None:  # the committed round's ε, from the ledger
        resumed.rounds[-1]["epsilon"] = ledger.max_epsilon()
    log.info("resuming after round %d (from %s)", experiment.state.round_index, store.folder)
    return resumed.rounds, resumed.bytes_per_client


def commit_round(
    experiment: Experiment,
    state: ServerState,
    round_metrics: RoundMetrics,
    events: Events,
    store: CheckpointStore,
    ledger: PrivacyLedger | None,
    records: list[dict[str, Any]],
    sent: list[float],
) -> dict[str, Any]:
    """Checkpoint the round, record its events in the ledger (the release), then adopt the new
    state; append its metrics record to ``records`` (and its bytes to ``sent``) and return it.
    Raises `PrivacyBudgetExceeded`, with nothing released and the state unchanged, if the
    ledger refuses."""
    record = round_record(replace(experiment, state=state), round_metrics, ledger)
    record["epsilon"] = None  # known once the ledger holds the round
    if record["train_loss"] is not None and math.isnan(record["train_loss"]):
        record["train_loss"] = None  # the sites withheld their losses
    bytes_sent = [] if round_metrics.bytes_per_client is None else [round_metrics.bytes_per_client]
    releases = 0 if ledger is None else ledger.releases + (1 if events else 0)
    store.save(Checkpoint(state, releases, [*records, record], [*sent, *bytes_sent]))
    if ledger is not None:
        try:
            ledger.record(state.round_index, events)
        except PrivacyBudgetExceeded:
            store.path(state.round_index).unlink()  # never released
            raise
        record["epsilon"] = ledger.max_epsilon()
    store.prune(state.round_index)
    experiment.state = state
    records.append(record)
    sent.extend(bytes_sent)
    return record


def final_summary(
    experiment: Experiment,
    ledger: PrivacyLedger | None,
    stopped: str | None,
    sent: list[float],
    transport: Transport,
    started: float,
) -> dict[str, Any]:
    """metrics.json's ``final`` for the model the run ended with."""
    data = experiment.data
    params = experiment.state.params
    loss, accuracy = evaluate(experiment.model, params, data.x_test, data.y_test)
    epsilon = ledger.max_epsilon() if ledger else None
    rounds = experiment.state.round_index
    final = {
        "accuracy": accuracy,
        "loss": loss,
        "epsilon": epsilon,
        "delta": ledger.settings.delta if ledger else None,
        "claim": run_claim(experiment, epsilon, rounds),
        "rounds": rounds,
        "stopped": stopped,
        "seconds": time.perf_counter() - started,  # of this process (since the last restart)
        "bytes_per_client": float(np.mean(sent)) if sent else None,
        "engine": getattr(transport, "last_engine", None),
        "device": str(next(iter(params.values())).device),
    }
    if experiment.privacy:
        final["noise_multiplier"] = experiment.privacy.noise_multiplier
        final["ledger"] = str(ledger.path) if ledger.path else None
    return final


@dataclass(frozen=True)
class ServerOptions:
    """Command-line settings of ``veil server`` (None: the config's ``deployment`` value)."""

    out: Path
    credentials: Credentials | None  # None: plaintext (--insecure)
    address: str | None = None
    min_clients: int | None = None
    sites: tuple[str, ...] | None = None


def serve(
    config: RunConfig,
    options: ServerOptions,
    on_listening: Callable[[int, list[str]], None] | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Run ``config`` as the coordinator of a deployment; return its metrics. ``on_listening``
    learns the bound port and the allowed sites; setting ``stop`` ends the run after the round
    in progress (SIGTERM to ``veil server``)."""
    check_deployable(config)
    deployment = config.deployment or DeploymentConfig()
    experiment = build_experiment(config)
    names = [c.name for c in experiment.data.clients]
    allowed = list(options.sites or deployment.sites or names)
    strangers = sorted(set(allowed) - set(names))
    if strangers:
        raise ConfigError(
            f"deployment.sites lists {strangers}, not clients of this federation "
            f"({', '.join(names)})"
        )
    min_clients = options.min_clients or deployment.min_clients or len(allowed)
    if min_clients > len(allowed):
        raise ConfigError(
            f"min_clients = {min_clients} exceeds the {len(allowed)} sites on the allowlist"
        )
    transport = GrpcTransport(
        TaskBoard(len(names), liveness=2 * deployment.poll_seconds + 5),
        names,
        update_kind(config),
        deployment.round_timeout,
        deployment.stage_timeout,
        max_update_norm(config),
        min_updates(config, experiment),
    )
    encryption = None
    if config.encryption is not None:
        encryption = codec.encryption_key_to_proto(experiment.secure.settings)
    attestation = None
    if config.aggregation.tee is not None:  # the enclave runs the aggregator chain
        attestation = EnclaveEndpoint(experiment.secure.enclave, options.credentials)
    limits = Limits(deployment.chunk_bytes, deployment.max_message_bytes)
    service = CoordinatorService(
        transport.board,
        Admission(names, frozenset(allowed), secure=options.credentials is not None),
        json.dumps(config.model_dump(mode="json")),
        encryption,
        limits,
        deployment.poll_seconds,
        attestation,
    )
    address = options.address or deployment.address
    server, port = start_server(service, address, options.credentials, limits)
    security = "mTLS" if options.credentials else "PLAINTEXT, no authentication"
    log.info("listening on %s (port %d, %s); sites: %s", address, port, security, allowed)
    if on_listening is not None:
        on_listening(port, allowed)

    def wait_for_sites(round_index: int) -> None:
        for waited in itertools.count():
            if stop is not None and stop.is_set():
                raise StopRun("stopped on request")
            if transport.board.wait_for_sites(min_clients, timeout=1):
                return
            if waited % 10 == 0:
                connected = len(transport.board.connected())
                log.info(
                    "round %d waits for %d sites (%d connected)",
                    round_index,
                    min_clients,
                    connected,
                )

    try:
        return run_rounds(
            experiment,
            transport,
            options.out,
            before_round=wait_for_sites,
            on_round=on_round,
            max_failed_rounds=deployment.max_failed_rounds,
            on_resumed=None if attestation is None else take_up_sealed_state(attestation),
        )
    finally:
        transport.board.finish("the run is over")
        transport.board.wait_until_told(deployment.poll_seconds + 2)
        server.stop(grace=1).wait()


def check_deployable(config: RunConfig) -> None:
    """Refuse settings that belong to the simulator or have no messages in veil.proto yet."""
    secure = config.secure_aggregation
    if secure is not None and secure.simulated_dropout > 0:
        raise ConfigError(
            "secure_aggregation.simulated_dropout is for the simulator; a deployment's "
            "dropouts are real: remove it"
        )
    if config.runtime.backend != "simulation":
        raise ConfigError(
            f"runtime.backend {config.runtime.backend!r} trains the clients of one simulation; "
            "in a deployment each site trains itself: remove it"
        )
    if config.aggregation.tee is not None and secure is not None:
        raise ConfigError(
            "aggregation.tee with secure_aggregation is not deployable over gRPC yet (the "
            "enclave would have to drive SecAgg+ over the network): deploy one of them, or run "
            "both in the simulator (veil run)"
        )


def take_up_sealed_state(attestation: EnclaveEndpoint) -> Callable[[Experiment], None]:
    """`run_rounds`' ``on_resumed``: the enclave resumes from the sealed state the run starts
    from (a new run's, or the resumed checkpoint's) before it answers any attestation."""

    def resume(experiment: Experiment) -> None:
        counter = attestation.resume(experiment.state.aggregator_state)
        log.info("the enclave took up sealed state at round counter %d", counter)

    return resume


def update_kind(config: RunConfig) -> str:
    """What the sites' encoder chain sends: SecAgg+ ring, ciphertexts (HE, or sealed for an
    enclave), or plain deltas."""
    if config.aggregation.tee is not None:
        return "sealed"
    if config.secure_aggregation is not None:
        return "ring"
    return "encrypted" if config.encryption is not None else "plain"


def min_updates(config: RunConfig, experiment: Experiment) -> int:
    """The fewest updates a round may sum: SecAgg+'s ``min_survivors``, HE's ``min_clients``."""
    if config.secure_aggregation is not None:
        return experiment.secure.settings.min_survivors
    if config.encryption is not None:
        return experiment.secure.settings.min_clients
    return 0


def max_update_norm(config: RunConfig) -> float | None:
    """The L2 bound plain updates must meet: the clip norm of client-level DP-FedAvg with a
    fixed clip (the aggregator refuses larger ones, so the transport drops them first)."""
    privacy = config.privacy
    fixed_clip = privacy is not None and privacy.level == "client" and not privacy.adaptive_clipping
    if fixed_clip and update_kind(config) == "plain":
        return privacy.clip_norm
    return None
