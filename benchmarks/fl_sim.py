"""W1 — fl-sim: client updates per second of FedAvg simulation, veil against Flower.

Workload (fixed): 1,000 clients × 50 rows of 784-dim synthetic data, 10 classes; MLP 784-100-10;
each sampled client runs 5 local SGD steps at batch 10 (lr 0.05); 100 clients per round; FedAvg.

Contenders, timed in this one process on the same data, model and batch order:

- ``veil``: the vectorized simulator (``runtime.engine: auto`` → the low-rank engine for this MLP);
- ``veil_fused``, ``veil_vmap``: the same simulator forced to its dense in-place engine and to its
  generic ``torch.func.vmap(grad)`` engine (the one any model gets);
- ``loop``: a plain sequential per-client torch loop (``torch.optim.SGD``, one client at a time);
- ``peer``: Flower 1.41's simulation engine (Ray backend) at its best setting on this machine,
  each client running the same plain torch training as ``loop`` (`flower_peer.py`).

Every contender runs with the same memory allocator settings (`veil.runtime.memory`: glibc keeps
freed memory for reuse, as ``veil run`` does by default; Flower's actors get the same through
glibc's environment variables). Throughput is steady state (round 1 excluded, reported in
``startup_s``). Before timing, one
round from the same start on the same clients checks that every contender reaches the same
global model (``agreement`` holds the largest absolute difference to the loop's model); the
benchmark refuses to report timings if any differs by more than ``AGREEMENT_TOLERANCE``.
On a CUDA machine a second veil figure is taken with 10,000 clients, all of them per round.
"""

from __future__ import annotations

import functools
import importlib.util
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from veil.data import make_synthetic_classification
from veil.errors import VeilError
from veil.fl import (
    FixedCountSampler,
    LocalTraining,
    RoundPlan,
    fedavg,
    identity,
    init_server_state,
    run_round,
    weighted_mean,
)
from veil.models import mlp
from veil.params import Params
from veil.runtime import ClientPool, SimulatedTransport
from veil.runtime.memory import GLIBC_ENVIRONMENT, keep_freed_memory
from veil.runtime.sequential import train_one_client


@dataclass(frozen=True)
class Workload:
    num_clients: int = 1000
    rows_per_client: int = 50
    features: int = 784
    classes: int = 10
    hidden: int = 100
    local_steps: int = 5
    batch_size: int = 10
    lr: float = 0.05
    clients_per_round: int = 100
    seed: int = 0

    @property
    def local(self) -> LocalTraining:
        return LocalTraining(lr=self.lr, batch_size=self.batch_size, steps=self.local_steps)


def client_pool(w: Workload, device: str = "cpu") -> ClientPool:
    """The workload's clients: consecutive blocks of ``rows_per_client`` synthetic rows."""
    data = make_synthetic_classification(
        w.num_clients * w.rows_per_client, w.features, w.classes, seed=w.seed
    )
    bounds = range(0, len(data.y), w.rows_per_client)
    return ClientPool.from_arrays(
        [data.x[i : i + w.rows_per_client] for i in bounds],
        [data.y[i : i + w.rows_per_client] for i in bounds],
        device,
    )


def initial_model(w: Workload) -> torch.nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(w.seed)
        return mlp(w.features, [w.hidden], w.classes)


def plan(w: Workload) -> RoundPlan:
    return RoundPlan(
        FixedCountSampler(w.clients_per_round),
        w.local,
        identity(),
        weighted_mean(),
        fedavg(),
        w.seed,
    )


def time_veil(w: Workload, engine: str, rounds: int, device: str = "cpu") -> dict:
    """Rounds of ``run_round`` on the simulator; start-up = data on device + first round."""
    started = time.perf_counter()
    module = initial_model(w)
    transport = SimulatedTransport(module, client_pool(w, device), engine=engine)
    round_plan = plan(w)
    state = init_server_state(
        {k: v.detach().to(device) for k, v in module.named_parameters()}, round_plan
    )
    seconds = []
    for _ in range(rounds):
        begin = time.perf_counter()
        state, _ = run_round(state, round_plan, transport)
        if device != "cpu":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - begin)
    steady = seconds[1:] or seconds
    return {
        "engine": transport.last_engine,
        "device": device,
        "threads": torch.get_num_threads(),
        "client_updates_per_s": w.clients_per_round * len(steady) / sum(steady),
        "startup_s": time.perf_counter() - started - sum(steady),
        "rounds_timed": len(steady),
    }


def veil_one_round(w: Workload, engine: str, client_ids: np.ndarray) -> Params:
    """The global model after round 1 on ``client_ids`` (for the agreement check)."""
    module = initial_model(w)
    transport = SimulatedTransport(module, client_pool(w), engine=engine)
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    updates, _, _, _ = transport.collect(params, client_ids, 1, plan(w), None, None)
    mean, _, _ = weighted_mean().apply(updates, None, None)
    return {k: params[k] + mean[k] for k in params}


def flower_trainer(workload: dict) -> Callable[[dict, int, int], tuple[dict, int]]:
    """Built once per Flower actor: the same plain torch training as the ``loop`` contender."""
    torch.set_num_threads(1)
    w = Workload(**workload)
    pool, module = client_pool(w), initial_model(w)

    def train(params: dict, client_id: int, server_round: int) -> tuple[dict, int]:
        index, mask = pool.schedules([client_id], server_round, w.seed, w.local)
        tensors = {k: torch.from_numpy(v) for k, v in params.items()}
        new, _ = train_one_client(module, tensors, pool.x, pool.y, index[0], mask[0], w.local)
        return {k: v.numpy() for k, v in new.items()}, int(pool.sizes[client_id])

    return train


def time_flower(w: Workload, rounds: int, sample_all: bool = False) -> tuple[dict, Params]:
    from flower_peer import run_flower

    initial = {k: v.detach().numpy() for k, v in initial_model(w).named_parameters()}
    run = run_flower(
        extra_env=GLIBC_ENVIRONMENT if ALLOCATOR_TUNED else None,
        initial_params=initial,
        trainer_factory=functools.partial(flower_trainer, asdict(w)),
        num_clients=w.num_clients,
        clients_per_round=w.clients_per_round,
        rounds=rounds,
        sample_all=sample_all,
    )
    steady = run.round_seconds[1:] or run.round_seconds
    result = {
        "name": "flower",
        "version": _flower_version(),
        "setting": run.setting,
        "client_updates_per_s": run.client_updates_per_s,
        "startup_s": run.startup_s + (run.round_seconds[0] if rounds > 1 else 0.0),
        "threads": run.threads_per_actor,
        "actors": run.num_actors,
        "rounds_timed": len(steady),
    }
    return result, {k: torch.from_numpy(v) for k, v in run.final_params.items()}


def _flower_version() -> str:
    import flwr

    return flwr.__version__


def max_difference(a: Params, b: Params) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


AGREEMENT_TOLERANCE = 1e-5  # largest |Δ| between any contender's model and the loop's
ALLOCATOR_TUNED = False  # set by run_benchmark; applied to every contender alike


def check_agreement(w: Workload, log: Callable[[str], None]) -> dict[str, float]:
    """One round on clients 0-9 from the same start: every contender must reach the loop's model."""
    small = replace(w, num_clients=10, clients_per_round=10)
    ids = np.arange(10)
    reference = veil_one_round(small, "sequential", ids)
    agreement = {
        engine: max_difference(veil_one_round(small, engine, ids), reference)
        for engine in ("lowrank", "fused", "vmap")
    }
    _, flower_params = time_flower(small, rounds=1, sample_all=True)
    agreement["flower"] = max_difference(flower_params, reference)
    log(f"agreement (max |Δ| vs loop): {agreement}")
    failed = {k: v for k, v in agreement.items() if not v <= AGREEMENT_TOLERANCE}
    if failed:
        raise VeilError(
            f"contenders disagree with the plain loop beyond {AGREEMENT_TOLERANCE}: {failed}"
        )
    return agreement


def run_benchmark(quick: bool = False, log: Callable[[str], None] = print) -> dict:
    """Time every contender; return the JSON of ``veil bench fl-sim``."""
    if importlib.util.find_spec("flwr") is None or importlib.util.find_spec("ray") is None:
        raise VeilError("fl-sim needs the bench extra (Flower, Ray): run `make bench`")
    w = Workload()
    global ALLOCATOR_TUNED
    ALLOCATOR_TUNED = keep_freed_memory()  # as `veil run` does; Flower's actors get it too
    rounds = {"veil": 6 if quick else 21, "loop": 2 if quick else 4, "flower": 3 if quick else 5}
    log("agreement: one round on clients 0-9 from the same start")
    agreement = check_agreement(w, log)
    log(f"veil: {rounds['veil']} rounds")
    veil = time_veil(w, "auto", rounds["veil"])
    log(f"veil fused engine: {rounds['veil']} rounds")
    veil_fused = time_veil(w, "fused", rounds["veil"])
    log(f"veil vmap engine: {rounds['veil']} rounds")
    veil_vmap = time_veil(w, "vmap", rounds["veil"])
    log(f"plain loop: {rounds['loop']} rounds")
    loop = time_veil(w, "sequential", rounds["loop"])
    log(f"flower: {rounds['flower']} rounds")
    peer, _ = time_flower(w, rounds["flower"])
    per_s = peer["client_updates_per_s"]
    result = {
        "workload": "fl-sim",
        "description": asdict(w),
        "veil": veil,
        "veil_fused": veil_fused,
        "veil_vmap": veil_vmap,
        "loop": loop,
        "peer": peer,
        "ratio": veil["client_updates_per_s"] / per_s,
        "ratio_fused": veil_fused["client_updates_per_s"] / per_s,
        "ratio_vmap": veil_vmap["client_updates_per_s"] / per_s,
        "ratio_loop": loop["client_updates_per_s"] / per_s,
        "agreement": agreement,
        "allocator": "glibc: freed memory kept for reuse" if ALLOCATOR_TUNED else "default",
        "quick": quick,
    }
    if torch.cuda.is_available():
        big = replace(w, num_clients=10_000, clients_per_round=10_000)
        log("gpu: 10,000 clients per round")
        result["gpu"] = time_veil(big, "auto", 4 if quick else 11, device="cuda")
        result["gpu"]["name"] = torch.cuda.get_device_name()
    return result
