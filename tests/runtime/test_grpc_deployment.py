"""End to end with real processes on 127.0.0.1: certificates, a coordinator and five hospital
sites (DP + SecAgg+, mTLS), the coordinator killed with SIGKILL mid-run and restarted, one site
killed and restarted too. The run must finish with every round in the ledger exactly once."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from veil.config import load_config
from veil.experiment import build_experiment, evaluate, execute
from veil.privacy.ledger import read_entries
from veil.runtime.checkpoint import CheckpointStore, config_digest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hospitals_secagg.yaml"
VEIL = [sys.executable, "-c", "import veil.cli_deploy; from veil.cli import main; main()"]
SITES = [f"client_{i}" for i in range(5)]
ROUNDS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rounds_done(out: Path) -> int:
    try:
        return len(json.loads((out / "metrics.json").read_text())["rounds"])
    except (OSError, ValueError):
        return 0


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_a_deployment_survives_kill_9_of_the_server_and_of_a_site(tmp_path):
    port = free_port()
    config = yaml.safe_load(EXAMPLE.read_text())
    config["federation"]["rounds"] = ROUNDS
    config["deployment"] = {"address": f"127.0.0.1:{port}", "poll_seconds": 0.5}
    config_path = tmp_path / "hospitals.yaml"
    config_path.write_text(yaml.safe_dump(config))
    certs, out = tmp_path / "certs", tmp_path / "run"
    sites_flags = [flag for site in SITES for flag in ("--site", site)]
    subprocess.run([*VEIL, "certs", "init", str(certs), *sites_flags], check=True)

    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name: str, *args: str) -> subprocess.Popen:
        log = open(logs / f"{name}.log", "a")  # noqa: SIM115  (closed with the process)
        return subprocess.Popen([*VEIL, *args], stdout=log, stderr=subprocess.STDOUT)

    def start_server() -> subprocess.Popen:
        return start("server", "server", str(config_path), "--certs", str(certs), "--out", str(out))

    def start_site(site: str) -> subprocess.Popen:
        args = ("client", "--server", f"127.0.0.1:{port}", "--site", site, "--certs", str(certs))
        return start(site, *args)

    server = start_server()
    sites = {site: start_site(site) for site in SITES}
    try:
        wait_for(lambda: rounds_done(out) >= 2, 240, "round 2")
        server.send_signal(signal.SIGKILL)
        server.wait()
        killed_at = rounds_done(out)
        server = start_server()
        wait_for(lambda: rounds_done(out) > killed_at, 240, "a round after the restart")
        sites["client_3"].send_signal(signal.SIGKILL)
        sites["client_3"].wait()
        sites["client_3"] = start_site("client_3")
        assert server.wait(timeout=300) == 0
        for site, process in sites.items():
            assert process.wait(timeout=60) == 0, site
    finally:
        for process in [server, *sites.values()]:
            if process.poll() is None:
                process.kill()
    server_log = (logs / "server.log").read_text()
    assert f"resuming after round {killed_at}" in server_log or (
        f"resuming after round {killed_at - 1}" in server_log
        and "was computed but never released" in server_log
    )
    assert "site client_3 joined" in server_log
    for key_file in certs.rglob("*.key"):  # no private key material in any log
        key_lines = key_file.read_text().splitlines()[1:-1]
        for log in logs.iterdir():
            assert not any(line in log.read_text() for line in key_lines)

    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["round"] for r in metrics["rounds"]] == list(range(1, ROUNDS + 1))
    assert metrics["final"]["rounds"] == ROUNDS and metrics["final"]["stopped"] is None
    ledger_rounds = [entry["round"] for entry in read_entries(out / "privacy_ledger.jsonl")[1]]
    assert ledger_rounds == list(range(1, ROUNDS + 1))  # each round spent once, none lost
    run_config = load_config(config_path)
    simulated = execute(build_experiment(run_config))
    assert metrics["final"]["epsilon"] == pytest.approx(simulated["final"]["epsilon"], rel=1e-9)
    final = CheckpointStore(out / "checkpoints", config_digest(run_config)).resume(None)
    assert final.state.round_index == ROUNDS
    initial = build_experiment(run_config)
    data = initial.data
    start_loss, _ = evaluate(initial.model, initial.state.params, data.x_test, data.y_test)
    end_loss, end_accuracy = evaluate(initial.model, final.state.params, data.x_test, data.y_test)
    assert end_accuracy == pytest.approx(metrics["final"]["accuracy"])
    assert end_loss < start_loss  # the federation learned through the kills
    assert (out / "report.html").stat().st_size > 10_000
    assert os.stat(certs / "ca.key").st_mode & 0o777 == 0o600
