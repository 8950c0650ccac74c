"""Flower SecAgg+ peer harness: run Flower's own SecAgg+ on a synthetic workload, time it.

Drives **Flower 1.41's SecAgg+** (``SecAggPlusWorkflow`` on the server, ``secaggplus_mod`` on
the clients) in Flower's Simulation Runtime (``flwr.simulation.run_simulation``, Ray backend,
in-process) so that veil's SecAgg+ can be compared with it. It does not import veil.

What runs
---------
* Clients: legacy ``ClientApp(client_fn, mods=[<timing/dropout mod>, secaggplus_mod])`` whose
  ``NumPyClient.fit`` returns ``client_input(seed, c, num_params)`` (float32) with weight 1,
  ``c = node_config["partition-id"]``.
* Server: ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))``, ``LegacyContext``, legacy
  ``FedAvg`` (all clients sampled, no evaluation): SecAgg+'s wiring in 1.41. Four stages
  (setup, share_keys, collect_masked_vectors, unmask), each one ``send_and_receive``.
* Aggregate: the server unmasks the sum of quantized ``[w, w * x]`` and divides by the summed
  weight: the **mean** (weights 1) of the included inputs, passed through by FedAvg. Stochastic
  rounding keeps it within ``2 * clipping_range / quantization_range`` of the clear mean;
  ``max_weight=1`` (as in Flower's example) makes it so; the default 1000 gives ~1000x the error.

Dropout after masked input
--------------------------
``round(dropout_fraction * num_clients)`` clients (drawn from ``seed``) run the first three
stages normally and answer the **unmask** stage with an error reply (``NODE_UNAVAILABLE``,
returned by the outer mod before ``secaggplus_mod``), as the runtime reports a failed node; no
timeout is waited out. Flower's ``unmask_stage`` fixes its active set *before* that round trip,
so these clients' masked inputs stay in the sum and their self-mask seeds are rebuilt from the
neighbours' shares (SecAgg+ semantics for a dropout after the masked-input round). The
aggregate is thus the mean over **all** clients that sent masked input (``included_clients``,
read from the results Flower hands to ``aggregate_fit``), not over the unmask survivors.

Defaults: Flower has none (its example: 3 shares, threshold 2, 5 clients). Per the SecAgg+
paper's ``k = O(log n)`` and Flower's odd-share rule: ``num_shares = min(n, 2*ceil(log2 n)+1)``,
``reconstruction_threshold = num_shares // 2 + 1`` (a neighbourhood majority).

What is measured
----------------
* ``startup_s``: call -> first client starting a SecAgg+ stage in a Ray actor.
* ``warmup_round_s``: ``warmup_rounds=1`` (default) runs one round without dropouts first, so
  the measured round pays no actor start-up.
* ``round_s``: measured round, strategy ``configure_fit`` -> end of ``aggregate_fit`` (server
  view, incl. Flower's 0.1 s polling). ``stage_s``: each stage's round trip; the server's
  unmasking work (share combination, mask regeneration) is the rest of ``round_s``.
* ``client_s`` / ``client_cpu_s``: wall / process-CPU time inside the ClientApp around
  ``secaggplus_mod`` (incl. the trivial ``fit``), summed over the four stages, mean over the
  clients that completed all four. With more actors than cores, wall includes CPU waits.

Not bit-reproducible: Flower's neighbour ring (``random``) and stochastic rounding
(``np.random``) are unseeded. Flower's mask PRG is ``np.random.RandomState`` seeded with a
32-bit fold of the key (fast, not cryptographic). Flower logging is lowered to WARNING.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flower_peer import DropExpected, quiet_flower

# Flower reads this at import time; the harness must not phone home.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

__all__ = ["FlowerSecAggRun", "default_secagg_params", "run_flower_secagg"]

_TIMING_KEY = "veil-secagg-timing"
_STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")
_EXPECTED_FLWR_WARNINGS = (
    "The `run_simulation` function is deprecated",
    "Manually terminating ClientAppActor",
    "DEPRECATED FEATURE",
    "No fit_metrics_aggregation_fn provided",
)


@dataclass(frozen=True)
class FlowerSecAggRun:
    """Timings and result of one Flower SecAgg+ run (see the module docstring)."""

    num_clients: int
    num_params: int
    num_shares: int  # SecAgg+ neighbours per client, itself included (Flower's num_shares)
    reconstruction_threshold: int
    dropped: int  # clients that sent their masked input, then failed the unmask stage
    round_s: float
    client_s: float
    startup_s: float
    aggregate: np.ndarray  # mean (weights 1) of the included inputs, as Flower obtained it
    expected: np.ndarray  # the same mean computed in the clear (float64)
    max_abs_error: float
    version: str
    client_cpu_s: float = 0.0
    warmup_round_s: float | None = None
    stage_s: dict[str, float] = field(default_factory=dict)
    client_stage_s: dict[str, float] = field(default_factory=dict)
    included_clients: tuple[int, ...] = ()
    dropped_clients: tuple[int, ...] = ()


def default_secagg_params(num_clients: int) -> tuple[int, int]:
    """``(num_shares, reconstruction_threshold)`` used when the caller gives none."""
    k = min(num_clients, 2 * math.ceil(math.log2(max(num_clients, 2))) + 1)
    return k, k // 2 + 1


def client_input(seed: int, client: int, num_params: int) -> np.ndarray:
    """Client ``client``'s input vector (float32)."""
    rng = np.random.default_rng([seed, client])
    return rng.uniform(-0.5, 0.5, num_params).astype(np.float32)


# --------------------------------------------------------------------------- client side


def _client_fn(context: Any, *, seed: int, num_params: int) -> Any:
    from flwr.client import NumPyClient

    cid = int(context.node_config["partition-id"])

    class _Client(NumPyClient):
        def fit(self, parameters, config):
            return [client_input(seed, cid, num_params)], 1, {}

    return _Client().to_client()


def _timing_dropout_mod(msg: Any, ctx: Any, call_next: Any, *, drop: frozenset, drop_round: str):
    """Outermost mod: simulate the unmask-stage dropout; time ``secaggplus_mod`` otherwise."""
    from flwr.app import Error, Message, MetricRecord
    from flwr.app.message_type import MessageType
    from flwr.common.constant import ErrorCode
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

    logger = logging.getLogger("flwr")
    if not getattr(logger, "_veil_secagg_quiet", False):  # once per actor process
        logger.addFilter(DropExpected(_EXPECTED_FLWR_WARNINGS))
        logger._veil_secagg_quiet = True  # type: ignore[attr-defined]
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, ctx)
    stage = str(msg.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE])
    cid = int(ctx.node_config["partition-id"])
    if stage == "unmask" and cid in drop and msg.metadata.group_id == drop_round:
        reason = f"simulated dropout of client {cid} after sending its masked input"
        return Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason=reason), reply_to=msg)
    started, w0, c0 = time.time(), time.perf_counter(), time.process_time()
    out = call_next(msg, ctx)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    out.content[_TIMING_KEY] = MetricRecord(
        {"wall": wall, "cpu": cpu, "start": started, "cid": cid}
    )
    return out


# --------------------------------------------------------------------------- server side


class _Recorder:
    """Timestamps and results shared between the server thread and the caller."""

    def __init__(self) -> None:
        self.round_starts: dict[int, float] = {}
        self.round_s: dict[int, float] = {}
        self.first_client_start = math.inf
        self.nid_to_cid: dict[int, int] = {}
        self.stage_s: dict[int, dict[str, float]] = defaultdict(dict)
        self.client: Any = defaultdict(lambda: defaultdict(dict))  # rnd, stage, cid: (wall, cpu)
        self.errors: Any = defaultdict(lambda: defaultdict(list))  # rnd, stage: [(nid, reason)]
        self.included_nids: dict[int, list[int]] = {}
        self.aggregate: np.ndarray | None = None


class _TimedGrid:
    """Delegates to Flower's grid; times each SecAgg+ stage and collects client timings."""

    def __init__(self, grid: Any, recorder: _Recorder) -> None:
        self._grid = grid
        self._rec = recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

        messages = list(messages)
        cfg = messages[0].content.config_records.get(RECORD_KEY_CONFIGS) if messages else None
        if cfg is None or Key.STAGE not in cfg:
            return self._grid.send_and_receive(messages, timeout=timeout)
        stage, rnd = str(cfg[Key.STAGE]), int(messages[0].metadata.group_id)
        t0 = time.perf_counter()
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self._rec.stage_s[rnd][stage] = time.perf_counter() - t0
        for m in replies:
            nid = m.metadata.src_node_id
            if m.has_error():
                self._rec.errors[rnd][stage].append((nid, str(m.error.reason)))
                continue
            t = m.content.metric_records[_TIMING_KEY]
            cid = int(t["cid"])
            self._rec.nid_to_cid[nid] = cid
            self._rec.client[rnd][stage][cid] = (float(t["wall"]), float(t["cpu"]))
            self._rec.first_client_start = min(self._rec.first_client_start, float(t["start"]))
        return replies


def _make_strategy(recorder: _Recorder, num_clients: int, num_params: int):
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg

    class TimedFedAvg(FedAvg):
        def configure_fit(self, server_round, parameters, client_manager):
            recorder.round_starts[server_round] = time.perf_counter()
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            out = super().aggregate_fit(server_round, results, failures)
            recorder.round_s[server_round] = (
                time.perf_counter() - recorder.round_starts[server_round]
            )
            recorder.included_nids[server_round] = [p.node_id for p, _ in results]
            if out[0] is not None:
                recorder.aggregate = parameters_to_ndarrays(out[0])[0]
            return out

    return TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=num_clients,
        min_evaluate_clients=0,
        min_available_clients=num_clients,
        initial_parameters=ndarrays_to_parameters([np.zeros(num_params, np.float32)]),
    )


# --------------------------------------------------------------------------- entry point


def run_flower_secagg(
    num_clients: int,
    num_params: int,
    *,
    dropout_fraction: float = 0.1,
    num_shares: int | None = None,
    reconstruction_threshold: int | None = None,
    clipping_range: float = 1.0,
    quantization_range: int = 2**22,
    modulus_range: int = 2**32,
    max_weight: float = 1.0,
    seed: int = 0,
    timeout_s: float = 600,
    warmup_rounds: int = 1,
    client_num_cpus: float = 0.5,
    total_cpus: int = 2,
) -> FlowerSecAggRun:
    """Run one measured SecAgg+ round (after ``warmup_rounds``) on Flower; see module doc.

    ``timeout_s`` is Flower's per-stage SecAgg+ timeout. Ray is started here and shut down
    before returning; it must not already be running. Raises if Flower halts the protocol.
    """
    if num_clients < 3 or num_params < 1:
        raise ValueError("need num_clients >= 3 and num_params >= 1")
    if not 0.0 <= dropout_fraction < 1.0 or warmup_rounds not in (0, 1):
        raise ValueError("need 0 <= dropout_fraction < 1 and warmup_rounds in (0, 1)")
    k = default_secagg_params(num_clients)[0] if num_shares is None else num_shares
    t = k // 2 + 1 if reconstruction_threshold is None else reconstruction_threshold
    num_drop = math.floor(dropout_fraction * num_clients + 0.5)
    drop = frozenset(
        int(c) for c in np.random.default_rng([seed, 7]).permutation(num_clients)[:num_drop]
    )

    import flwr
    import ray
    from flwr.client import ClientApp
    from flwr.client.mod import secaggplus_mod
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.simulation import run_simulation

    if ray.is_initialized():
        raise RuntimeError("run_flower_secagg starts and stops its own Ray; it is running")
    rounds = warmup_rounds + 1
    recorder = _Recorder()
    workflow = SecAggPlusWorkflow(
        num_shares=k,
        reconstruction_threshold=t,
        max_weight=max_weight,
        clipping_range=clipping_range,
        quantization_range=quantization_range,
        modulus_range=modulus_range,
        timeout=timeout_s,
    )

    pythonpath = os.pathsep.join([p for p in sys.path if p])
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    env_vars = {"PYTHONPATH": pythonpath, "FLWR_TELEMETRY_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    # Ship this module's client code to the actors by value (it may be loaded by file path,
    # and opacus installs a stray top-level ``benchmarks`` package that shadows ours).
    this_module = sys.modules.get(__name__)
    by_value = this_module is not None and __name__ not in set(
        ray.cloudpickle.list_registry_pickle_by_value()
    )
    if by_value:
        ray.cloudpickle.register_pickle_by_value(this_module)

    t_call = time.time()
    try:
        with quiet_flower(_EXPECTED_FLWR_WARNINGS):
            server_app = ServerApp()

            @server_app.main()
            def _main(grid: Any, context: Any) -> None:
                ctx = LegacyContext(
                    context=context,
                    config=ServerConfig(num_rounds=rounds),
                    strategy=_make_strategy(recorder, num_clients, num_params),
                )
                DefaultWorkflow(fit_workflow=workflow)(_TimedGrid(grid, recorder), ctx)

            def client_fn(context: Any) -> Any:  # Flower requires exactly this signature
                return _client_fn(context, seed=seed, num_params=num_params)

            client_app = ClientApp(
                client_fn=client_fn,
                mods=[
                    functools.partial(_timing_dropout_mod, drop=drop, drop_round=str(rounds)),
                    secaggplus_mod,
                ],
            )
            ray.init(
                num_cpus=total_cpus,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=True,
                runtime_env={"env_vars": env_vars},
            )
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=num_clients,
                backend_config={"client_resources": {"num_cpus": client_num_cpus, "num_gpus": 0.0}},
            )
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if by_value:
            ray.cloudpickle.unregister_pickle_by_value(this_module)

    errors = {s: e for s, e in recorder.errors[rounds].items() if e}
    if rounds not in recorder.round_s or recorder.aggregate is None:
        raise RuntimeError(f"Flower's SecAgg+ round did not complete; client errors: {errors}")
    unexpected = {(r, s): e for r, st in recorder.errors.items() for s, e in st.items() if e}
    unexpected.pop((rounds, "unmask"), None)
    if unexpected:
        raise RuntimeError(f"unexpected Flower client errors (round, stage): {unexpected}")
    dropped = sorted(recorder.nid_to_cid[n] for n, _ in errors.get("unmask", []))
    if set(dropped) != drop:
        raise RuntimeError(f"clients {dropped} dropped, expected {sorted(drop)}")
    included = sorted(recorder.nid_to_cid[n] for n in recorder.included_nids[rounds])
    expected = np.mean(
        [client_input(seed, c, num_params).astype(np.float64) for c in included], axis=0
    )
    aggregate = np.asarray(recorder.aggregate, dtype=np.float64)

    timings = recorder.client[rounds]
    full = [c for c in range(num_clients) if all(c in timings[s] for s in _STAGES)]
    return FlowerSecAggRun(
        num_clients=num_clients,
        num_params=num_params,
        num_shares=k,
        reconstruction_threshold=t,
        dropped=len(dropped),
        round_s=recorder.round_s[rounds],
        client_s=float(np.mean([sum(timings[s][c][0] for s in _STAGES) for c in full])),
        startup_s=recorder.first_client_start - t_call,
        aggregate=aggregate,
        expected=expected,
        max_abs_error=float(np.max(np.abs(aggregate - expected))),
        version=flwr.__version__,
        client_cpu_s=float(np.mean([sum(timings[s][c][1] for s in _STAGES) for c in full])),
        warmup_round_s=recorder.round_s.get(1) if warmup_rounds else None,
        stage_s={s: recorder.stage_s[rounds].get(s, float("nan")) for s in _STAGES},
        client_stage_s={s: float(np.mean([v[0] for v in timings[s].values()])) for s in _STAGES},
        included_clients=tuple(included),
        dropped_clients=tuple(dropped),
    )


if __name__ == "__main__":  # python benchmarks/flower_secagg_peer.py NUM_CLIENTS NUM_PARAMS
    _r = run_flower_secagg(int(sys.argv[1]), int(sys.argv[2]))
    _skip = ("aggregate", "expected", "included_clients")
    print({k: v for k, v in vars(_r).items() if k not in _skip})
