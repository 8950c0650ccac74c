"""Flower deployment peer: Flower 1.41's deployment runtime on 127.0.0.1, timed like veil's.

Everything runs as Flower's own programs, in processes of their own, as in a real deployment:

* ``flower-superlink``: Fleet, Control and Runtime APIs over HTTPS on one port, with the same
  CA and server certificate as veil's coordinator (Flower's TLS authenticates the server only;
  SuperNode authentication is off, the default);
* one ``flower-supernode`` per client (``partition-id=i``), each with its own Runtime API port
  and its own ``flower-superexec``, which starts a ``flwr-clientapp`` process for every task
  (subprocess isolation, Flower's default);
* ``flwr run`` submits ``benchmarks/_flower_deploy_app`` (FedAvg over every node each round,
  no evaluation); the SuperLink's SuperExec starts ``flwr-serverapp`` for it.

The ServerApp times each round from ``configure_train`` to the end of ``aggregate_train`` and
reads the SuperNodes' bytes on the wire after round 1 and after the last round
(``_tcp_traffic``). Runtime dependency installation is off (there is no network here).
``memory_per_node_bytes`` is the resident memory of a SuperNode and its SuperExec at the end.
This module does not import veil.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
APP = HERE / "_flower_deploy_app"
LINK = "bench"  # the SuperLink connection's name in FLWR_HOME/config.toml


@dataclass(frozen=True)
class FlowerDeploymentRun:
    """What one run of the app on Flower's deployment runtime measured."""

    version: str
    nodes: int
    round_seconds: list[float]
    round_ends: list[float]  # time.time() at the end of each round
    traffic: list[tuple[int, int]]  # SuperNodes' (sent, received) after round 1 and the last
    replies: list[int]  # replies per round
    startup_s: float  # first process started → round 1 configured
    memory_per_node_bytes: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resident_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` and of its children, from /proc (0 once it exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0
    kib = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")]
    return 1024 * sum(kib) + sum(resident_bytes(int(child)) for child in children)


def available_memory_bytes() -> int:
    """``MemAvailable`` of /proc/meminfo."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable line")


class FlowerProcesses:
    """The SuperLink and SuperNodes, each in its own process group, stopped on exit."""

    def __init__(self, folder: Path, certs: Path):
        self.folder, self.certs = folder, certs
        self.home = folder / "flwr-home"
        self.home.mkdir(parents=True)
        self.port = free_port()
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{LINK}"\n\n[superlink.{LINK}]\n'
            f'address = "127.0.0.1:{self.port}"\nroot-certificates = "{certs / "ca.pem"}"\n'
        )
        binaries = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "FLWR_HOME": str(self.home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "PATH": f"{binaries}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(HERE),  # the ServerApp imports _tcp_traffic
            "OMP_NUM_THREADS": "1",
        }
        self.superlink: subprocess.Popen | None = None
        self.supernodes: list[subprocess.Popen] = []

    def start(self, nodes: int) -> None:
        c = self.certs
        tls = ["--ssl-ca-certfile", str(c / "ca.pem"), "--ssl-certfile", str(c / "server.pem")]
        tls += ["--ssl-keyfile", str(c / "server.key")]
        offline = "--disable-runtime-dependency-installation"  # no `uv sync`: no network here
        self.superlink = self._spawn(
            "superlink", ["flower-superlink", "--port", str(self.port), *tls, offline]
        )
        for i in range(nodes):
            command = ["flower-supernode", "--superlink", f"127.0.0.1:{self.port}"]
            command += ["--root-certificates", str(c / "ca.pem"), "--port", str(free_port())]
            command += ["--node-config", f"partition-id={i} num-partitions={nodes}"]
            self.supernodes.append(self._spawn(f"supernode_{i}", command))

    def submit(self, settings: dict[str, object]) -> str:
        """``flwr run`` the app with ``settings`` as its run config; the run id."""
        overrides = " ".join(f"{k}={json.dumps(v)}" for k, v in settings.items())
        for _ in range(60):  # the SuperLink may still be starting
            done = self._flwr(["run", str(APP), LINK, "--run-config", overrides])
            reply = json.loads(done.stdout or "{}")
            if reply.get("success"):
                return str(reply["run-id"])
            time.sleep(2)
        raise RuntimeError(f"flwr run failed: {reply.get('error-message', done.stderr)[-400:]}")

    def status(self, run_id: str) -> str:
        """The run's status, e.g. ``running`` or ``finished:failed``."""
        done = self._flwr(["ls", LINK, "--run-id", run_id])
        if done.returncode != 0:
            return "unknown"
        runs = json.loads(done.stdout).get("runs", [])
        return str(runs[0].get("status", "unknown")) if runs else "unknown"

    def run_log(self, run_id: str) -> str:
        done = self._flwr(["log", run_id, LINK, "--show"], json_output=False)
        return (done.stdout + done.stderr).strip()[-600:]

    def stop(self) -> None:
        for process in [*self.supernodes, self.superlink]:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.supernodes, self.superlink]:
            if process is None:
                continue
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        with open(self.folder / f"{name}.log", "w") as log:
            return subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )

    def _flwr(self, arguments: list[str], json_output: bool = True):
        command = ["flwr", *arguments, *(["--format", "json"] if json_output else [])]
        return subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=120)


def run_flower_deployment(
    nodes: int, rounds: int, folder: Path, certs: Path, timeout: float = 1200.0
) -> FlowerDeploymentRun:
    """Run the app for ``rounds`` rounds over ``nodes`` SuperNodes (certificates of
    `veil certs init` in ``certs``); scratch files and logs go to ``folder``."""
    if nodes < 1 or rounds < 2:
        raise ValueError(f"need nodes >= 1 and rounds >= 2 (got {nodes}, {rounds})")
    timing = folder / "timing.json"
    flower = FlowerProcesses(folder, certs)
    started = time.time()
    try:
        flower.start(nodes)
        settings = {
            "num-server-rounds": rounds,
            "num-clients": nodes,
            "timing-file": str(timing),
            "superlink-port": flower.port,
            "supernode-pids": " ".join(str(p.pid) for p in flower.supernodes),
        }
        run_id = flower.submit(settings)
        records = _wait_for_rounds(flower, run_id, timing, rounds, started + timeout)
        memory = sum(resident_bytes(p.pid) for p in flower.supernodes) / nodes
    finally:
        flower.stop()
    errors = [e for r in records for e in r["errors"]]
    if errors:
        raise RuntimeError(f"{len(errors)} Flower ClientApp task(s) failed; first: {errors[0]}")
    return FlowerDeploymentRun(
        version=version("flwr"),
        nodes=nodes,
        round_seconds=[r["end"] - r["start"] for r in records],
        round_ends=[r["end"] for r in records],
        traffic=[tuple(r["traffic"]) for r in records if "traffic" in r],
        replies=[r["replies"] for r in records],
        startup_s=records[0]["start"] - started,
        memory_per_node_bytes=memory,
    )


def _wait_for_rounds(
    flower: FlowerProcesses, run_id: str, timing: Path, rounds: int, deadline: float
) -> list[dict]:
    def written() -> list[dict]:
        return json.loads(timing.read_text()) if timing.exists() else []

    checked = time.time()
    while len(written()) < rounds:
        if time.time() > deadline:
            raise RuntimeError(
                f"Flower finished {len(written())} of {rounds} rounds in time; run log: "
                f"{flower.run_log(run_id)}"
            )
        if time.time() - checked > 15:  # a failed ServerApp writes no more rounds
            checked = time.time()
            ended = flower.status(run_id).startswith("finished")
            if ended and len(written()) < rounds:
                raise RuntimeError(f"the Flower run ended early: {flower.run_log(run_id)}")
        time.sleep(0.5)
    return written()
