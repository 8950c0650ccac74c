"""Scale-out on Ray: the clients' local training runs in Ray actors, the round stays `run_round`.

``RayTransport`` implements the same `Transport` protocol as the in-process simulator. Each of
``workers`` actors holds the client data (shipped once through Ray's object store) and a
`SimulatedTransport` of its own; a round splits the sampled clients into contiguous slices, one
per actor, and each actor trains its slice with the vectorized engines. The driver then stacks
the deltas in the sampled order and runs the client encoder chain itself, exactly as the
simulator does, so a run gives the same model on Ray as in one process (to float rounding).

``ray.init()`` starts a local cluster by default; ``runtime.ray_address`` joins an existing one
(``"auto"``, or ``"ray://HEAD:10001"`` for Ray Client).

Privacy: under sample-level DP each actor draws its DP-SGD noise from its own generator, seeded
from the operating system's cryptographic source (or from ``noise_seed_for_testing`` and the
actor's index, for reproducible tests only). Secrets of the aggregator chain (HE keys, SecAgg+
state) never leave the driver: actors receive a plan whose encoder and aggregator are empty.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from veil.errors import ConfigError
from veil.fl.links import ClientUpdates, Events, identity
from veil.params import Params
from veil.randomness import noise_generator
from veil.runtime.pool import ClientPool
from veil.runtime.sim import SimulatedTransport, encode_updates


class ClientWorker:
    """What runs inside one Ray actor: a simulator over all clients' rows, trained on demand."""

    def __init__(self, module: nn.Module, pool: ClientPool, engine: str, chunk_size, names):
        torch.set_num_threads(1)  # one core per actor: Ray schedules the parallelism
        self.transport = SimulatedTransport(module, pool, engine, chunk_size, names)

    def train(
        self, params: Params, client_ids: np.ndarray, round_index: int, plan, noise_seed
    ) -> tuple[Params, Events, Tensor, str | None]:
        """Train ``client_ids`` (no encoding); their deltas, DP events, losses and engine."""
        key = noise_generator(*noise_seed) if noise_seed else noise_generator()
        updates, _, events, losses = self.transport.collect(
            params, client_ids, round_index, plan, None, key
        )
        return updates.deltas, events, losses, self.transport.last_engine


class RayTransport:
    """The `Transport` whose clients train in ``workers`` Ray actors (see the module docstring)."""

    def __init__(
        self,
        module: nn.Module,
        pool: ClientPool,
        *,
        workers: int = 2,
        address: str | None = None,
        engine: str = "auto",
        chunk_size: int | None = None,
        client_names: list[str] | None = None,
    ) -> None:
        ray = _import_ray()
        if workers < 1:
            raise ConfigError(f"runtime.ray_workers must be >= 1 (got {workers})")
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self.local = SimulatedTransport(module, pool, engine, chunk_size, client_names)
        self.module, self.pool = self.local.module, pool
        self.last_engine: str | None = None
        shared = ray.put(pool)
        actor = ray.remote(num_cpus=1)(ClientWorker)
        self.workers = [
            actor.remote(self.module, shared, engine, chunk_size, client_names)
            for _ in range(workers)
        ]

    @property
    def num_clients(self) -> int:
        return self.pool.num_clients

    def collect(
        self,
        params: Params,
        client_ids: np.ndarray,
        round_index: int,
        plan,
        encoder_state: Any,
        key: torch.Generator,
    ) -> tuple[ClientUpdates, Any, Events, Tensor]:
        """Train the clients in the actors, then run ``plan.encoder`` here on their deltas."""
        ray = _import_ray()
        bare = dataclasses.replace(plan, encoder=identity(), aggregator=identity())
        slices = [s for s in np.array_split(np.asarray(client_ids), len(self.workers)) if len(s)]
        cpu_params = {k: v.cpu() for k, v in params.items()}
        futures = [
            worker.train.remote(cpu_params, part, round_index, bare, self._noise_seed(plan, stream))
            for stream, (worker, part) in enumerate(
                zip(self.workers, slices, strict=False), start=round_index * len(self.workers)
            )
        ]
        results = ray.get(futures)
        device = self.pool.x.device
        if results:
            deltas = {k: torch.cat([r[0][k] for r in results]).to(device) for k in params}
            losses = torch.cat([r[2] for r in results]).to(device)
            self.last_engine = results[0][3]
        else:
            deltas = {k: v.new_zeros((0, *v.shape)).to(device) for k, v in params.items()}
            losses = torch.zeros(0, device=device)
        events = [event for r in results for event in r[1]]
        updates, encoder_state, encoder_events = encode_updates(
            deltas, self.pool.sizes[client_ids], client_ids, plan, encoder_state, key
        )
        return updates, encoder_state, events + encoder_events, losses

    @staticmethod
    def _noise_seed(plan, stream: int) -> tuple[int, int] | None:
        """A worker's reproducible noise stream (one per worker and round), only under
        ``noise_seed_for_testing``; otherwise None: fresh cryptographic seeds."""
        seed = plan.noise_seed_for_testing
        return None if seed is None else (seed, stream)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "runtime.backend: ray needs the ray package: pip install 'veil[ray]'"
        ) from None
    return ray
