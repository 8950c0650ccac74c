"""Flower peer harness: run a workload on Flower's simulation engine and time it honestly.

This module drives **Flower 1.41's Simulation Runtime** (``flwr.simulation.run_simulation``,
Ray backend) on a workload given by the caller, so that veil's vectorized simulator can be
compared with Flower doing *exactly the same local training*. It does not import veil.

What runs
---------
* Server: the Message-API ``flwr.serverapp.ServerApp`` whose ``main`` calls
  ``flwr.serverapp.strategy.FedAvg.start``: ``clients_per_round`` of the ``num_clients`` virtual
  SuperNodes are sampled per round (all of them with ``sample_all``), the global model is the
  average of the returned models weighted by ``num-examples`` (McMahan et al., 2017), and
  federated evaluation is off (``fraction_evaluate=0``).
* Clients: a Message-API ``flwr.clientapp.ClientApp`` whose ``train`` handler maps its node to
  ``client_id = context.node_config["partition-id"]`` (0 .. num_clients-1) and calls
  ``train(params, client_id, server_round) -> (new_params, num_examples)``. ``train`` is built
  by the caller's ``trainer_factory`` **once per Ray actor process** (cached per process),
  so data can be loaded once per actor, as a real Flower user would do.

``run_simulation`` (deprecated in 1.41 for the ``flwr run`` CLI, which cannot take in-process
callables) is the in-process entry to the same engine, so it measures the same thing.

What is measured
----------------
* ``startup_s``: from the call until the first client training starts inside a Ray actor
  (``ray.init``, SuperNode registration, actor processes, the caller's ``trainer_factory``).
* ``round_seconds[r]``: wall time of round r, from the strategy's ``configure_train`` to the
  end of its ``aggregate_train`` (send model, clients train, replies pulled, FedAvg).
  Round 1 additionally pays actor start-up that had not finished when it was configured.
* ``client_updates_per_s``: clients trained per second in steady state, i.e. over rounds
  2..R (round 1 is excluded as warm-up; with a single round it falls back to round 1).
* ``final_params``: the global model after the last aggregation, keys in the order of
  ``initial_params``.

Flower's best setting on a 2-core box: ``client_num_cpus=0.5`` (four single-threaded actors,
which overlap Ray's and (de)serialisation's overhead with compute), measured against the other
settings in docs/simulator.md. ``threads_per_actor`` sets torch's pool and
``OMP/MKL/OPENBLAS_NUM_THREADS`` in each actor and is reported.

Flower's console logging is lowered to WARNING during the run (and three expected warnings
are dropped); errors are still shown, and a failed client makes ``run_flower`` raise.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sys
import time
import types
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Flower reads this at import time; there is no network here and the harness must not phone
# home. Respect an explicit setting by the caller.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

Params = dict[str, np.ndarray]
TrainFn = Callable[[Params, int, int], tuple[Params, int]]
TrainerFactory = Callable[[], TrainFn]

__all__ = ["FlowerRun", "run_flower"]

_ARRAYS_KEY = "arrays"
_METRICS_KEY = "metrics"
_WEIGHT_KEY = "num-examples"
_THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Flower messages that are expected with this setup and carry no information for a benchmark.
_EXPECTED_FLWR_WARNINGS = (
    "The `run_simulation` function is deprecated",
    "fraction_evaluate is set to 0.0",
    "Manually terminating ClientAppActor",  # logged by every actor at shutdown
)

# Per-process cache of trainers built by ``trainer_factory``, keyed by the token of the
# ``run_flower`` call (the factory object itself is unpickled afresh for every message, so
# its identity cannot be the key). It lives in a synthetic ``sys.modules`` entry rather than
# in this module's globals because the client handler is shipped to Ray *by value* (see
# ``run_flower``), and by-value functions get a fresh copy of their globals per message.
_CACHE_MODULE = "_veil_flower_peer_trainer_cache"


@dataclass(frozen=True)
class FlowerRun:
    """Timings and result of one Flower simulation run (see the module docstring)."""

    setting: str
    startup_s: float
    round_seconds: list[float]
    client_updates_per_s: float
    final_params: dict[str, np.ndarray]
    threads_per_actor: int
    num_actors: int = 0  # concurrent Ray actors in Flower's pool
    clients_per_round_trained: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------- client side


def _set_torch_threads(threads: int) -> int:
    """Pin torch's intra-op pool in this process if torch is loaded; return the count."""
    torch = sys.modules.get("torch")
    if torch is None:
        return threads
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return int(torch.get_num_threads())


def _get_trainer(token: str, factory: TrainerFactory, threads: int) -> tuple[TrainFn, int]:
    """Build the caller's trainer once per (process, run) and cache it."""
    cache_module = sys.modules.get(_CACHE_MODULE)
    if cache_module is None:
        cache_module = types.ModuleType(_CACHE_MODULE)
        cache_module.trainers = {}  # type: ignore[attr-defined]
        sys.modules[_CACHE_MODULE] = cache_module
    trainers: dict[str, tuple[TrainFn, int]] = cache_module.trainers  # type: ignore[attr-defined]
    cached = trainers.get(token)
    if cached is None:
        trainers.clear()  # a previous run's trainer (and its data) is not needed any more
        logging.getLogger("flwr").addFilter(DropExpected())
        _set_torch_threads(threads)
        train = factory()
        cached = (train, _set_torch_threads(threads))
        trainers[token] = cached
    return cached


def _client_train(msg: Any, context: Any, *, factory: TrainerFactory, token: str, threads: int):
    """Flower ``ClientApp`` train handler: unpack the model, run the caller's ``train``."""
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    train, torch_threads = _get_trainer(token, factory, threads)
    started = time.time()  # wall clock: comparable with the driver's
    params = {name: arr.numpy() for name, arr in msg.content[_ARRAYS_KEY].items()}
    client_id = int(context.node_config["partition-id"])
    server_round = int(msg.content["config"]["server-round"])
    new_params, num_examples = train(params, client_id, server_round)
    reply = RecordDict(
        {
            _ARRAYS_KEY: ArrayRecord(
                {name: Array(np.ascontiguousarray(v)) for name, v in new_params.items()}
            ),
            _METRICS_KEY: MetricRecord(
                {
                    _WEIGHT_KEY: int(num_examples),
                    "train-start": started,
                    "pid": os.getpid(),
                    "torch-threads": torch_threads,
                }
            ),
        }
    )
    return Message(content=reply, reply_to=msg)


# --------------------------------------------------------------------------- server side


class _Recorder:
    """Timestamps and results shared between the strategy (server thread) and the caller."""

    def __init__(self) -> None:
        self.first_train_start: float | None = None  # time.time() of first client training
        self.round_starts: dict[int, float] = {}
        self.round_seconds: list[float] = []
        self.clients_trained: list[int] = []
        self.pids: set[int] = set()
        self.torch_threads: set[int] = set()
        self.final: dict[str, np.ndarray] | None = None


def _make_strategy(recorder: _Recorder, **fedavg_kwargs: Any):
    """A stock ``FedAvg`` whose round boundaries are timed; client errors raise."""
    from flwr.serverapp.strategy import FedAvg

    class TimedFedAvg(FedAvg):
        def configure_train(self, server_round, arrays, config, grid):
            recorder.round_starts[server_round] = time.perf_counter()
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            errors = [m.error.reason for m in replies if m.has_error()]
            if errors:
                raise RuntimeError(
                    f"{len(errors)} Flower client(s) failed in round {server_round}; "
                    f"first error: {errors[0]}"
                )
            arrays, metrics = super().aggregate_train(server_round, replies)
            recorder.round_seconds.append(time.perf_counter() - recorder.round_starts[server_round])
            recorder.clients_trained.append(len(replies))
            for m in replies:
                mr = m.content[_METRICS_KEY]
                recorder.pids.add(int(mr["pid"]))
                recorder.torch_threads.add(int(mr["torch-threads"]))
                if server_round == 1:
                    t = float(mr["train-start"])
                    if recorder.first_train_start is None or t < recorder.first_train_start:
                        recorder.first_train_start = t
            if arrays is None:
                raise RuntimeError(f"Flower returned no aggregate in round {server_round}")
            recorder.final = {name: arr.numpy() for name, arr in arrays.items()}
            return arrays, metrics

    return TimedFedAvg(**fedavg_kwargs)


class DropExpected(logging.Filter):
    """Drops Flower log records that contain one of the ``expected`` messages."""

    def __init__(self, expected: tuple[str, ...] = _EXPECTED_FLWR_WARNINGS) -> None:
        super().__init__()
        self.expected = expected

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(s in record.getMessage() for s in self.expected)


@contextlib.contextmanager
def quiet_flower(expected: tuple[str, ...] = _EXPECTED_FLWR_WARNINGS) -> Iterator[None]:
    """Lower Flower's console logging to WARNING, minus the ``expected`` warnings; restore after."""
    keep = DropExpected(expected)
    logger = logging.getLogger("flwr")
    old_level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addFilter(keep)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="Tip: In future versions of Ray", category=FutureWarning
            )
            yield
    finally:
        logger.removeFilter(keep)
        logger.setLevel(old_level)


# --------------------------------------------------------------------------- entry point


def _registered_by_value() -> set[str]:
    import ray.cloudpickle

    return set(ray.cloudpickle.list_registry_pickle_by_value())


def _validate(
    initial_params: Params,
    num_clients: int,
    clients_per_round: int,
    rounds: int,
    client_num_cpus: float,
    total_cpus: int,
    threads_per_actor: int,
) -> int:
    if not initial_params:
        raise ValueError("initial_params must hold at least one array")
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if not 1 <= clients_per_round <= num_clients:
        raise ValueError(
            f"clients_per_round must be in [1, num_clients={num_clients}], got {clients_per_round}"
        )
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if total_cpus < 1 or threads_per_actor < 1:
        raise ValueError("total_cpus and threads_per_actor must be >= 1")
    if client_num_cpus <= 0:
        raise ValueError(f"client_num_cpus must be > 0, got {client_num_cpus}")
    num_actors = math.floor(total_cpus / client_num_cpus)
    if num_actors < 1:
        raise ValueError(
            f"client_num_cpus={client_num_cpus} does not fit in total_cpus={total_cpus}"
        )
    return num_actors


def run_flower(
    *,
    initial_params: dict[str, np.ndarray],
    trainer_factory: TrainerFactory,
    num_clients: int,
    clients_per_round: int,
    rounds: int,
    client_num_cpus: float = 0.5,
    total_cpus: int = 2,
    threads_per_actor: int = 1,
    sample_all: bool = False,
    extra_env: dict[str, str] | None = None,
) -> FlowerRun:
    """Run FedAvg on Flower's Ray simulation engine and return honest timings.

    ``trainer_factory`` must be picklable: a top-level function or a ``functools.partial``
    of one, from a module the Ray workers can import by name (they get the driver's
    ``sys.path`` as ``PYTHONPATH``; functions of ``__main__`` are pickled by value). It is
    called once per actor process and must return ``train(params, client_id, server_round)
    -> (new_params, num_examples)``. It is pickled with every message, so keep it small and
    load data inside it.

    Ray is started here (``num_cpus=total_cpus``) and shut down before returning, also on
    error; Ray must not already be running in this process. ``extra_env`` is added to the
    actors' environment (e.g. the same allocator settings as the other contenders).
    """
    num_actors = _validate(
        initial_params,
        num_clients,
        clients_per_round,
        rounds,
        client_num_cpus,
        total_cpus,
        threads_per_actor,
    )
    import ray
    from flwr.app import Array, ArrayRecord
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    if ray.is_initialized():
        raise RuntimeError("run_flower starts and stops its own Ray; Ray is already running")

    token = uuid.uuid4().hex
    names = list(initial_params)
    per_round = num_clients if sample_all else clients_per_round
    recorder = _Recorder()

    # Start Ray ourselves, as Flower's RayBackend would (it skips ray.init when Ray is up),
    # but with the thread-count variables in the workers' runtime env. Flower shuts it down.
    pythonpath = os.pathsep.join([p for p in sys.path if p])
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    env_vars = {"PYTHONPATH": pythonpath, "FLWR_TELEMETRY_ENABLED": "0"}
    env_vars.update({v: str(threads_per_actor) for v in _THREAD_ENV_VARS})
    env_vars.update(extra_env or {})

    # Ship this module's client handler to the actors by value: they then need not import
    # it by name (the repository's ``benchmarks`` directory is shadowed by a stray top-level
    # ``benchmarks`` package that opacus installs, and the caller may load this file by path).
    this_module = sys.modules.get(__name__)
    by_value = this_module is not None and __name__ not in _registered_by_value()
    if by_value:
        ray.cloudpickle.register_pickle_by_value(this_module)

    t_call = time.time()
    try:
        with quiet_flower():
            strategy = _make_strategy(
                recorder,
                fraction_train=per_round / num_clients,
                min_train_nodes=per_round,  # int(N * fraction) may round down; pin the count
                min_available_nodes=num_clients,  # sample once every SuperNode is registered
                fraction_evaluate=0.0,
            )
            initial = ArrayRecord(
                {k: Array(np.ascontiguousarray(initial_params[k])) for k in names}
            )
            server_app = ServerApp()

            @server_app.main()
            def _main(grid: Any, context: Any) -> None:
                strategy.start(grid=grid, initial_arrays=initial, num_rounds=rounds)

            client_app = ClientApp()
            client_app.train()(
                functools.partial(
                    _client_train, factory=trainer_factory, token=token, threads=threads_per_actor
                )
            )
            ray.init(
                num_cpus=total_cpus,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=True,  # Flower's default: actor output and errors stay visible
                runtime_env={"env_vars": env_vars},
            )
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=num_clients,
                backend_config={"client_resources": {"num_cpus": client_num_cpus, "num_gpus": 0.0}},
            )
    finally:
        if ray.is_initialized():  # Flower shuts Ray down itself unless it failed early
            ray.shutdown()
        if by_value:
            ray.cloudpickle.unregister_pickle_by_value(this_module)

    if recorder.final is None or len(recorder.round_seconds) != rounds:
        raise RuntimeError(
            f"Flower finished {len(recorder.round_seconds)} of {rounds} rounds without error"
        )
    if set(recorder.final) != set(names):
        raise RuntimeError(f"Flower returned arrays {sorted(recorder.final)}, expected {names}")
    assert recorder.first_train_start is not None

    steady = slice(1, None) if rounds > 1 else slice(0, None)
    updates = sum(recorder.clients_trained[steady])
    seconds = sum(recorder.round_seconds[steady])
    threads_seen = sorted(recorder.torch_threads)
    setting = (
        f"ray, num_cpus={client_num_cpus:g} per client, {num_actors} concurrent actors on "
        f"{total_cpus} CPUs, torch threads per actor={threads_per_actor}"
    )
    if threads_seen != [threads_per_actor]:
        setting += f" (observed {threads_seen})"
    return FlowerRun(
        setting=setting,
        startup_s=recorder.first_train_start - t_call,
        round_seconds=list(recorder.round_seconds),
        client_updates_per_s=updates / seconds,
        final_params={k: recorder.final[k] for k in names},
        threads_per_actor=threads_per_actor,
        num_actors=num_actors,
        clients_per_round_trained=list(recorder.clients_trained),
    )
