"""A whole run from a validated config: data, model, rounds, evaluation, metrics and report.

``run_experiment`` rewrites ``metrics.json`` atomically after every round (``final`` stays null
until the run ends), so a crashed run leaves a readable record of the rounds it finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from veil.claims import privacy_claim
from veil.config import RunConfig
from veil.data import FederatedData, federate, load_dataset
from veil.errors import ConfigError, PrivacyBudgetExceeded
from veil.fl import (
    FixedCountSampler,
    FractionSampler,
    LocalTraining,
    PoissonSampler,
    RoundMetrics,
    RoundPlan,
    ServerState,
    build_server_optimizer,
    identity,
    init_server_state,
    run_round,
    weighted_mean,
)
from veil.fl.links import Link, chain
from veil.fl.robust import (
    build_robust_aggregator,
    check_robust_setting,
    check_secure_combination,
    norm_bounding_for_secure_sum,
)
from veil.fl.sampling import ClientSampler
from veil.he.federated import EncryptedPlan, encrypted_plan
from veil.models import FunctionalModel, build_model, cross_entropy_and_accuracy
from veil.privacy.federated import DpPlan, dp_plan
from veil.privacy.ledger import PrivacyLedger
from veil.report import write_json_atomic, write_report
from veil.report.attached import clear_sections
from veil.runtime import ClientPool, SimulatedTransport, resolve_device
from veil.runtime.memory import keep_freed_memory
from veil.secagg.federated import SecurePlan, secure_plan
from veil.tee.federated import TeePlan, tee_plan


@dataclass
class Experiment:
    """The pieces of a simulated run, built once from a config."""

    config: RunConfig
    data: FederatedData
    model: FunctionalModel
    plan: RoundPlan
    transport: SimulatedTransport
    state: ServerState
    privacy: DpPlan | None = None
    secure: SecurePlan | EncryptedPlan | TeePlan | None = None


def clients_per_round(config: RunConfig, num_clients: int) -> int:
    """How many clients a round takes (the expected number, rounded, under Poisson sampling)."""
    return max(1, round(build_sampler(config).expected_count(num_clients)))


def build_sampler(config: RunConfig) -> ClientSampler:
    """Client sampler from ``federation``: fixed count, fraction, Poisson, or everyone."""
    fed = config.federation
    if fed.fraction is not None:
        return FractionSampler(fed.fraction)
    if fed.poisson_rate is not None:
        return PoissonSampler(fed.poisson_rate)
    return FixedCountSampler(fed.clients_per_round or config.partition.num_clients)


def build_local_training(config: RunConfig) -> LocalTraining:
    """Local training plan from ``client`` (one epoch when neither steps nor epochs is set)."""
    c = config.client
    epochs = c.local_epochs if c.local_epochs is not None or c.local_steps is not None else 1
    return LocalTraining(c.lr, c.batch_size, c.local_steps, epochs, c.prox_mu)


def build_plan(
    config: RunConfig,
    privacy: DpPlan | None = None,
    secure: SecurePlan | EncryptedPlan | None = None,
) -> RoundPlan:
    """The round plan: sampler, local training, encoder and aggregator chains (plain FedAvg;
    DP-FedAvg's clipping and noise; or SecAgg+ / encrypted aggregation, with noise added by the
    clients under DP), server optimizer."""
    server = config.server
    encoder, aggregator = identity(), weighted_mean()
    if secure:
        encoder, aggregator = secure.encoder, secure.aggregator
    elif privacy:
        encoder, aggregator = privacy.encoder, privacy.aggregator
    encoder, aggregator = robust_links(config, encoder, aggregator)
    return RoundPlan(
        sampler=build_sampler(config),
        local=replace(build_local_training(config), dp=privacy.local_dp if privacy else None),
        encoder=encoder,
        aggregator=aggregator,
        server_optimizer=build_server_optimizer(server.optimizer, **server.hyperparameters()),
        seed=config.seed,
        noise_seed_for_testing=config.privacy.noise_seed_for_testing if config.privacy else None,
        secret_sampling=config.privacy is not None,
    )


def protection(config: RunConfig) -> str:
    """What the server sees of each update: ``"none"`` (each in the clear), ``"secagg"`` or
    ``"he"`` (only their sum)."""
    return "secagg" if config.secure_aggregation else "he" if config.encryption else "none"


def robust_links(config: RunConfig, encoder: Link, aggregator: Link) -> tuple[Link, Link]:
    """``aggregation.robust`` in place of the mean; under SecAgg+ or HE, where the server sees
    only the sum, only norm bounding (clipping on the clients, weak-DP noise on the sum)."""
    robust = config.aggregation.robust
    if robust is None:
        return encoder, aggregator
    if protection(config) == "none":
        return encoder, build_robust_aggregator(robust.method, **robust.parameters())
    clip, noise = norm_bounding_for_secure_sum(robust.max_norm, robust.noise_std or 0.0)
    return chain(clip, encoder), chain(aggregator, noise)


def federated_data(config: RunConfig) -> FederatedData:
    """The config's data set, split among its clients (``data`` and ``partition``)."""
    p = config.partition
    return federate(
        load_dataset(config.data.dataset, seed=config.seed),
        method=p.method,
        num_clients=p.num_clients,
        test_fraction=config.data.test_fraction,
        seed=config.seed,
        alpha=p.alpha,
        shards_per_client=p.shards_per_client,
        beta=p.beta,
    )


def build_experiment(config: RunConfig, data: FederatedData | None = None) -> Experiment:
    """Everything a run needs, validated before any round starts: device, data, model, plan,
    simulator. Every problem is a `ConfigError` raised here, not half-way through the rounds.

    ``data`` replaces the config's federated split (e.g. an attack's subset of each client's
    rows); by default it is `federated_data` of the config."""
    if config.task != "federated_training":
        raise ConfigError(f"build_experiment runs task federated_training (got {config.task})")
    if config.aggregation.robust:  # before any key generation
        check_secure_combination(config.aggregation.robust.method, protection(config))
    device = resolve_device(config.runtime.device)
    if config.runtime.keep_freed_memory:
        keep_freed_memory()
    data = federated_data(config) if data is None else data
    m = config.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        module = build_model(
            m.name,
            data.feature_shape,
            data.num_classes,
            hidden=m.hidden,
            activation=m.activation,
            channels=m.channels,
        )
    privacy = (
        dp_plan(config, build_local_training(config), data.train_sizes) if config.privacy else None
    )
    secure = None
    length = sum(p.numel() for p in module.parameters())
    if config.secure_aggregation:
        secure = secure_plan(config, data.num_clients, length, privacy)
    elif config.encryption:
        secure = encrypted_plan(config, data.num_clients, length, privacy)
    plan = build_plan(config, privacy, secure)
    if config.aggregation.tee:  # the aggregator chain moves into an attested enclave
        secure = tee_plan(config, plan.encoder, plan.aggregator, secure)
        plan = replace(plan, encoder=secure.encoder, aggregator=secure.aggregator)
    plan.sampler.check(data.num_clients)
    if config.aggregation.robust:
        robust = config.aggregation.robust
        expected = clients_per_round(config, data.num_clients)
        check_robust_setting(robust.method, robust.parameters(), expected)
    pool = ClientPool.from_arrays(
        [c.x_train for c in data.clients], [c.y_train for c in data.clients], device
    )
    transport = build_transport(config, module, pool, [c.name for c in data.clients])
    model = FunctionalModel(transport.module)
    state = init_server_state(model.init_params(), plan)
    return Experiment(config, data, model, plan, transport, state, privacy, secure)


def build_transport(config: RunConfig, module, pool: ClientPool, names: list[str]):
    """The simulator, or with ``runtime.backend: ray`` the same training in Ray actors."""
    runtime = config.runtime
    if runtime.backend == "ray":
        from veil.runtime.ray_transport import RayTransport

        return RayTransport(
            module,
            pool,
            workers=runtime.ray_workers or 2,
            address=runtime.ray_address,
            engine=runtime.engine,
            chunk_size=runtime.chunk_size,
            client_names=names,
        )
    return SimulatedTransport(
        module, pool, engine=runtime.engine, chunk_size=runtime.chunk_size, client_names=names
    )


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` CPU threads inside the block (``None``: leave torch's setting alone)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def evaluate(model: FunctionalModel, params, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``params`` on numpy data."""
    device = next(iter(params.values())).device
    return cross_entropy_and_accuracy(
        model, params, torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)
    )


def round_record(
    experiment: Experiment, metrics: RoundMetrics, ledger: PrivacyLedger | None
) -> dict[str, Any]:
    """The ``rounds[]`` entry of metrics.json for one finished round (ε from the ledger)."""
    loss, accuracy = evaluate(
        experiment.model, experiment.state.params, experiment.data.x_test, experiment.data.y_test
    )
    private = ledger is not None  # who took part and their raw losses are not DP releases
    return {
        "round": metrics.round_index,
        "accuracy": accuracy,
        "loss": loss,
        "epsilon": ledger.max_epsilon() if ledger else None,
        "seconds": metrics.seconds,
        "clients": None if private else len(metrics.client_ids),
        "train_loss": None if private else metrics.train_loss,
    }


def client_records(experiment: Experiment) -> list[dict[str, Any]]:
    """Per-client loss and accuracy of the final global model on each client's own test rows."""
    records = []
    for client in experiment.data.clients:
        loss, accuracy = evaluate(
            experiment.model, experiment.state.params, client.x_test, client.y_test
        )
        records.append(
            {
                "name": client.name,
                "accuracy": _finite(accuracy),
                "loss": _finite(loss),
                "num_train": len(client.y_train),
                "num_test": len(client.y_test),
            }
        )
    return records


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else value


def run_claim(experiment: Experiment, epsilon: float | None, rounds: int) -> str:
    """The run's one-sentence privacy claim (DP, secure aggregation, both, or neither)."""
    if experiment.secure:
        return experiment.secure.claim(experiment.config, experiment.privacy, epsilon, rounds)
    if experiment.privacy:
        return experiment.privacy.claim(epsilon, rounds)
    return privacy_claim(experiment.config, len(experiment.data.clients))


def run_experiment(
    config: RunConfig,
    out_dir: str | Path | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Build and run ``config``; return (and, with ``out_dir``, write) metrics and report."""
    if config.task == "frequency_estimation":
        from veil.frequency_experiment import run_frequency_estimation

        return run_frequency_estimation(config, out_dir)
    if config.task == "vertical_training":
        from veil.vertical_experiment import run_vertical_training

        return run_vertical_training(config.vertical, config.seed, config.name, out_dir)
    if config.task == "mpc_training":
        from veil.mpc.experiment import run_mpc_training

        return run_mpc_training(config.mpc, config.data, config.seed, config.name, out_dir)
    return execute(build_experiment(config), out_dir, on_round)


def open_ledger(experiment: Experiment, out: Path | None) -> PrivacyLedger | None:
    """The run's privacy ledger: ``privacy.ledger``, else OUT/privacy_ledger.jsonl, else kept in
    memory. An existing ledger file carries its spent budget over to this run."""
    if experiment.privacy is None:
        return None
    settings = experiment.privacy.ledger
    path = experiment.config.privacy.ledger or (out / "privacy_ledger.jsonl" if out else None)
    return PrivacyLedger.open(path, settings) if path else PrivacyLedger.in_memory(settings)


def execute(
    experiment: Experiment,
    out_dir: str | Path | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every round of a built experiment; metrics.json is rewritten after each round.

    With DP, a round whose release the ledger refuses ends the run cleanly at the last
    affordable round (``final.stopped`` says why).
    """
    started = time.perf_counter()
    config = experiment.config
    out = None if out_dir is None else prepare_output_directory(Path(out_dir))
    if out is not None:
        clear_sections(out)  # attacks and audits of an earlier run in this folder
    ledger = open_ledger(experiment, out)
    metrics: dict[str, Any] = {
        "config": config.model_dump(mode="json"),
        "rounds": [],
        "final": None,
    }
    stopped = None
    sent: list[float] = []
    with torch_threads(config.runtime.threads):
        for _ in range(config.federation.rounds):
            try:
                experiment.state, round_metrics = run_round(
                    experiment.state, experiment.plan, experiment.transport, ledger
                )
            except PrivacyBudgetExceeded as refusal:
                stopped = str(refusal)
                break
            if round_metrics.bytes_per_client is not None:
                sent.append(round_metrics.bytes_per_client)
            record = round_record(experiment, round_metrics, ledger)
            metrics["rounds"].append(record)
            if out is not None:
                write_json_atomic(metrics, out / "metrics.json")
            if on_round is not None:
                on_round(record)
        # Per-client figures (sizes, accuracies) are not covered by a DP guarantee: withheld.
        metrics["clients"] = [] if ledger else client_records(experiment)
        loss, accuracy = evaluate(
            experiment.model,
            experiment.state.params,
            experiment.data.x_test,
            experiment.data.y_test,
        )
    epsilon = ledger.max_epsilon() if ledger else None
    rounds_done = experiment.state.round_index
    metrics["final"] = {
        "accuracy": accuracy,
        "loss": loss,
        "epsilon": epsilon,
        "delta": ledger.settings.delta if ledger else None,
        "claim": run_claim(experiment, epsilon, rounds_done),
        "rounds": rounds_done,
        "stopped": stopped,
        "seconds": time.perf_counter() - started,
        "bytes_per_client": float(np.mean(sent)) if sent else None,  # per round, upload
        "engine": experiment.transport.last_engine,
        "device": str(experiment.transport.pool.x.device),
    }
    if experiment.privacy:
        metrics["final"]["noise_multiplier"] = experiment.privacy.noise_multiplier
        metrics["final"]["ledger"] = str(ledger.path) if ledger.path else None
    if out is not None:
        write_json_atomic(metrics, out / "metrics.json")
        write_report(metrics, out / "report.html")
    return metrics


def prepare_output_directory(out: Path) -> Path:
    """Create ``out`` (and parents) or raise a `ConfigError` saying why it cannot be used."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"output directory {out} cannot be created: {error.strerror or error}"
        ) from None
    return out
