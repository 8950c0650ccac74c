"""Deployment load: 200 sites against one coordinator over gRPC + mTLS on 127.0.0.1.

veil: one coordinator in this process (`veil.runtime.grpc.loopback`: `serve` with its gRPC
server, task board and crash-safe round loop, which checkpoints, evaluates and writes
metrics.json every round) and the sites in a few worker processes (``_deploy_sites.py``), each
site a thread running veil's own `run_site` with its own certificate, channel and TLS 1.3
connection. Every round samples all sites; each trains a logistic model (650 parameters) on its
~7 rows of digits. Measured plain (FedAvg) and with SecAgg+ (Bell et al. 2020: the coordinator
is honest-but-curious and learns only the sum; k ≈ 3·log2 n neighbours, t = ⌊k/2⌋ + 1).

Figures (round 1 is warm-up; rounds 2..R count):

- ``rounds_per_minute``: 60 · (R − 1) / (end of round R − end of round 1);
- ``p50_round_s`` / ``p99_round_s``: each round's wall time at the coordinator (send the model,
  every site trains and replies, aggregate; for SecAgg+ also the four stages);
- ``bytes_sent_per_client_round`` / ``bytes_received_per_client_round``: payload bytes on the
  sites' TCP connections (TLS, HTTP/2 framing and idle long polls included), per site and round
  (``_tcp_traffic``), read between rounds;
- ``join_s``: from starting the site processes to round 1 (imports, handshakes, joins).

Peer: Flower 1.41's deployment runtime (``flower_deployment_peer.py``: SuperLink, one
SuperNode per client, ``flwr run``), timed and counted the same way. It runs at the full size
when this machine's memory holds that many SuperNodes; otherwise ``peer`` says why, and
``shared_size`` compares veil and Flower at ``PEER_NODES`` clients. ``ratio`` is veil's plain
rounds per minute over Flower's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from _tcp_traffic import TrafficMeter
from flower_deployment_peer import available_memory_bytes, run_flower_deployment
from veil.config import RunConfig, parse_config
from veil.errors import ConfigError, VeilError
from veil.runtime.certs import init_authority, issue_site
from veil.runtime.grpc.loopback import loopback

FULL = {"clients": 200, "rounds": 20, "processes": 4, "peer_rounds": 5}
QUICK = {"clients": 4, "rounds": 3, "processes": 2, "peer_rounds": 3}
PEER_NODES = 20  # Flower's size when the full one does not fit
SITES_SCRIPT = Path(__file__).resolve().parent / "_deploy_sites.py"
RUN_TIMEOUT_S = 1800.0


def deploy_config(clients: int, rounds: int, secure: bool) -> RunConfig:
    """The benchmark's run: ``clients`` sites (client_0 …) of digits, logistic model, all sites
    every round; SecAgg+ (clip norm 1, 32-bit ring) when ``secure``."""
    if clients < 2 or rounds < 2:
        raise ConfigError(
            f"the deploy benchmark needs at least 2 clients and 2 rounds (round 1 is warm-up); "
            f"got {clients} clients, {rounds} rounds"
        )
    config = {
        "name": "bench-deploy",
        "seed": 0,
        "data": {"dataset": "digits"},
        "partition": {"method": "iid", "num_clients": clients},
        "model": {"name": "logistic"},
        "federation": {"rounds": rounds},
        "client": {"local_epochs": 1, "batch_size": 16, "lr": 0.1},
    }
    if secure:
        config["secure_aggregation"] = {"clip_norm": 1.0}
    return parse_config(config)


def ensure_certificates(folder: Path, sites: list[str]) -> Path:
    """A CA and the coordinator's certificate for 127.0.0.1 in ``folder`` (made once), and a
    certificate for each site of ``sites`` that has none yet."""
    if not (folder / "ca.key").exists():
        init_authority(folder)
    for site in sites:
        if not (folder / "sites" / f"{site}.pem").exists():
            issue_site(folder, site)
    return folder


def summarize(
    round_seconds: list[float],
    round_ends: list[float],
    traffic: list[tuple[int, int]],
    clients: int,
    sites_per_round: list[int],
) -> dict:
    """Throughput, latency percentiles and bytes per client and round over rounds 2..R, from
    each round's duration and end time and the clients' (sent, received) bytes after round 1
    and after round R."""
    if len(round_seconds) < 2 or len(round_ends) != len(round_seconds) or len(traffic) != 2:
        raise VeilError(
            f"{len(round_seconds)} rounds and {len(traffic)} traffic readings: the benchmark "
            "needs every round (at least 2) and readings after round 1 and the last"
        )
    steady = len(round_seconds) - 1
    (sent_1, received_1), (sent_r, received_r) = traffic
    per_client_round = clients * steady
    return {
        "rounds_measured": steady,
        "rounds_per_minute": 60 * steady / (round_ends[-1] - round_ends[0]),
        "p50_round_s": float(np.percentile(round_seconds[1:], 50)),
        "p99_round_s": float(np.percentile(round_seconds[1:], 99)),
        "first_round_s": round_seconds[0],
        "bytes_sent_per_client_round": (sent_r - sent_1) / per_client_round,
        "bytes_received_per_client_round": (received_r - received_1) / per_client_round,
        "sites_per_round": min(sites_per_round),
    }


@dataclass
class RoundWatch:
    """The coordinator's ``on_round`` hook: each round's record and end time, and the sites'
    traffic (``meter``) after round 1 and after ``last_round``."""

    last_round: int
    meter: TrafficMeter | None = None
    records: list[dict] = field(default_factory=list)
    ended: list[float] = field(default_factory=list)
    traffic: list[tuple[int, int]] = field(default_factory=list)

    def __call__(self, record: dict) -> None:
        self.ended.append(time.perf_counter())
        self.records.append(record)
        if record["round"] in (1, self.last_round):
            self.traffic.append(self.meter.read())


def start_site_processes(
    address: str, certs: Path, sites: list[str], processes: int, logs: Path
) -> list[subprocess.Popen]:
    """``processes`` worker processes (``_deploy_sites.py``), the sites dealt out round-robin."""
    if not 1 <= processes <= len(sites):
        raise ConfigError(
            f"site processes must be between 1 and the {len(sites)} sites (got {processes})"
        )
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = []
    for p in range(processes):
        command = [sys.executable, str(SITES_SCRIPT), address, str(certs), *sites[p::processes]]
        with open(logs / f"sites_{p}.out", "w") as out, open(logs / f"sites_{p}.err", "w") as err:
            workers.append(subprocess.Popen(command, stdout=out, stderr=err, env=environment))
    return workers


def wait_for_run(result: dict, workers: list[subprocess.Popen], logs: Path) -> None:
    """Wait until the coordinator's run ends; raise if a site process dies first."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while "metrics" not in result:
        for p, worker in enumerate(workers):
            if worker.poll() not in (None, 0):
                raise VeilError(f"site process {p} failed: {_tail(logs / f'sites_{p}.err')}")
        if time.monotonic() > deadline:
            raise VeilError(f"the deployment did not finish within {RUN_TIMEOUT_S:.0f} s")
        time.sleep(0.2)


def site_outcomes(workers: list[subprocess.Popen], logs: Path) -> dict[str, str]:
    """Wait for the site processes to exit; every site's closing reason (raise if one failed)."""
    outcomes = {}
    for p, worker in enumerate(workers):
        worker.wait(timeout=120)
        text = (logs / f"sites_{p}.out").read_text()
        if worker.returncode != 0 or not text:
            raise VeilError(
                f"site process {p} failed: {text[-300:]} {_tail(logs / f'sites_{p}.err')}"
            )
        outcomes.update(json.loads(text))
    return outcomes


def _tail(path: Path, characters: int = 400) -> str:
    """The end of a log file on one line (the CLI prints an error as one line)."""
    lines = path.read_text(errors="replace")[-characters:].splitlines()
    return " | ".join(line.strip() for line in lines if line.strip()) or "(no output)"


def measure_veil(clients: int, rounds: int, processes: int, secure: bool, folder: Path) -> dict:
    """Run the benchmark's deployment once (certificates in ``folder/certs``) and return
    `summarize`'s figures, ``join_s`` and the final accuracy."""
    config = deploy_config(clients, rounds, secure)
    sites = [f"client_{i}" for i in range(clients)]
    certs = ensure_certificates(folder / "certs", sites)
    logs = Path(tempfile.mkdtemp(prefix="veil-", dir=folder))
    watch = RoundWatch(rounds)
    result: dict = {}
    workers: list[subprocess.Popen] = []
    try:
        started = time.perf_counter()
        with loopback(config, logs / "run", certs, result=result, on_round=watch) as running:
            workers = start_site_processes(running.address, certs, sites, processes, logs)
            watch.meter = TrafficMeter(running.port, [worker.pid for worker in workers]).start()
            wait_for_run(result, workers, logs)
        outcomes = site_outcomes(workers, logs)
    finally:
        if watch.meter is not None:
            watch.meter.stop()
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    if isinstance(result["metrics"], Exception):
        raise result["metrics"]
    stopped = result["metrics"]["final"]["stopped"]
    if stopped:
        raise VeilError(f"the deployment stopped early: {stopped}")
    records = watch.records
    seconds = [r["seconds"] for r in records]
    figures = summarize(
        seconds, watch.ended, watch.traffic, clients, [r["clients"] for r in records]
    )
    figures["join_s"] = watch.ended[0] - seconds[0] - started
    figures["sites_finished"] = sum(reason == "the run is over" for reason in outcomes.values())
    figures["final_accuracy"] = records[-1]["accuracy"]
    return figures


def measure_flower(nodes: int, rounds: int, folder: Path) -> dict:
    """Flower's deployment runtime at ``nodes`` SuperNodes, summarized as veil's runs are."""
    certs = ensure_certificates(folder / "certs", [])  # Flower's SuperLink uses the server's
    run = run_flower_deployment(nodes, rounds, Path(tempfile.mkdtemp(dir=folder)), certs)
    figures = summarize(run.round_seconds, run.round_ends, run.traffic, nodes, run.replies)
    return {
        "name": "flower-deployment",
        "version": run.version,
        "clients": nodes,
        **figures,
        "startup_s": run.startup_s,
        "memory_per_node_mib": run.memory_per_node_bytes / 2**20,
        "setting": "SuperLink + one SuperNode per client, subprocess isolation, TLS (server "
        "certificate only), stock FedAvg, no evaluation",
    }


def flower_does_not_fit(nodes: int, measured: dict) -> str | None:
    """Why ``nodes`` SuperNodes cannot run here (None if they fit in the available memory),
    from the memory a SuperNode measured in ``measured``."""
    per_node = measured["memory_per_node_mib"] * 2**20
    available = available_memory_bytes()
    if nodes * per_node <= available:
        return None
    return (
        f"{nodes} SuperNodes do not fit in this machine's memory: a flower-supernode and the "
        f"flower-superexec it starts hold {per_node / 2**20:.0f} MiB resident (measured with "
        f"{measured['clients']} nodes), so {nodes} need {nodes * per_node / 2**30:.1f} GiB "
        f"before the flwr-clientapp process each node starts for every round; "
        f"{available / 2**30:.1f} GiB is available"
    )


def _describe(figures: dict) -> str:
    return (
        f"  {figures['rounds_per_minute']:.1f} rounds/min, p50 {figures['p50_round_s']:.2f} s, "
        f"p99 {figures['p99_round_s']:.2f} s, {figures['bytes_sent_per_client_round']:,.0f} B "
        f"up / {figures['bytes_received_per_client_round']:,.0f} B down per client and round"
    )


def run_benchmark(quick: bool = False, log: Callable[[str], None] = print) -> dict:
    """``veil bench deploy``: veil plain and with SecAgg+, then Flower's deployment runtime."""
    if shutil.which("ss") is None:
        raise VeilError("bench deploy counts bytes on the wire with `ss`: install iproute2")
    size = QUICK if quick else FULL
    clients, rounds, processes = size["clients"], size["rounds"], size["processes"]
    peer_nodes = min(clients, PEER_NODES)
    result: dict = {"workload": "deploy", "clients": clients, "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="veil-bench-deploy-") as scratch:
        folder = Path(scratch)
        result["veil"] = {}
        for variant, secure in (("plain", False), ("secagg", True)):
            log(f"veil {variant}: {clients} sites in {processes} processes, {rounds} rounds, mTLS")
            result["veil"][variant] = measure_veil(clients, rounds, processes, secure, folder)
            log(_describe(result["veil"][variant]))
        log(f"Flower deployment runtime: {peer_nodes} SuperNodes, {size['peer_rounds']} rounds")
        flower = measure_flower(peer_nodes, size["peer_rounds"], folder)
        log(_describe(flower))
        if peer_nodes < clients:
            log(f"veil plain at the same size: {peer_nodes} sites")
            veil_small = measure_veil(peer_nodes, rounds, processes, False, folder)
            log(_describe(veil_small))
            result["shared_size"] = {
                "clients": peer_nodes,
                "veil": veil_small,
                "peer": flower,
                "ratio": veil_small["rounds_per_minute"] / flower["rounds_per_minute"],
            }
            reason = flower_does_not_fit(clients, flower)
            if reason is None:
                log(f"Flower deployment runtime: {clients} SuperNodes")
                flower = measure_flower(clients, size["peer_rounds"], folder)
            else:
                log(f"Flower at {clients} SuperNodes not run: {reason}")
                flower = {"name": "flower-deployment", "clients": clients, "error": reason}
    result["peer"] = flower
    result["ratio"] = (
        result["veil"]["plain"]["rounds_per_minute"] / flower["rounds_per_minute"]
        if "error" not in flower
        else None
    )
    return result
