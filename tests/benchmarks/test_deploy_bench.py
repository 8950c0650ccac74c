"""The deployment load benchmark (``benchmarks/deploy.py``) and its helpers: the site worker
processes, the wire-byte counter, the Flower deployment peer and its app.

Fast tests check the arithmetic, the byte counter on a real socket, every refusal, and one
tiny veil deployment end to end; the slow ones run ``veil bench deploy --quick`` (veil plain,
SecAgg+ and Flower's SuperLink + SuperNodes)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from veil.cli import find_benchmark
from veil.errors import ConfigError, VeilError

bench = find_benchmark("deploy")  # puts benchmarks/ on sys.path
traffic = importlib.import_module("_tcp_traffic")
peer = importlib.import_module("flower_deployment_peer")
needs_ss = pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
PARAM_BYTES = 650 * 4  # the logistic model on digits, float32

SS_LISTING = """\
0      0      127.0.0.1:40000 127.0.0.1:5000 users:(("python",pid=11,fd=7)) ino:501 sk:1 <->
\t cubic bytes_sent:120 bytes_acked:101 bytes_received:50 segs_out:3
0      0      127.0.0.1:40001 127.0.0.1:5000 users:(("python",pid=11,fd=8)) ino:502 sk:2 <->
\t cubic bytes_sent:10 bytes_acked:10 segs_out:3
0      0      127.0.0.1:40002 127.0.0.1:5000 users:(("other",pid=22,fd=3)) ino:503 sk:3 <->
\t cubic bytes_sent:9999 bytes_acked:9999 bytes_received:9999
"""


# --- configuration and refusals ------------------------------------------------------------


def test_deploy_config_is_all_sites_every_round_with_secagg_when_asked():
    plain = bench.deploy_config(5, 3, secure=False)
    secure = bench.deploy_config(5, 3, secure=True)
    assert plain.partition.num_clients == 5 and plain.federation.rounds == 3
    assert plain.federation.clients_per_round is None and plain.secure_aggregation is None
    assert secure.secure_aggregation.clip_norm == 1.0


@pytest.mark.parametrize(("clients", "rounds"), [(1, 3), (5, 1)])
def test_deploy_config_refuses_fewer_than_two_clients_or_rounds(clients, rounds):
    with pytest.raises(ConfigError, match="at least 2 clients and 2 rounds"):
        bench.deploy_config(clients, rounds, secure=False)


def test_site_processes_must_not_outnumber_the_sites(tmp_path):
    with pytest.raises(ConfigError, match="between 1 and the 2 sites \\(got 3\\)"):
        bench.start_site_processes("127.0.0.1:1", tmp_path, ["a", "b"], 3, tmp_path)


def test_without_ss_the_benchmark_says_what_to_install(monkeypatch):
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    with pytest.raises(VeilError, match="install iproute2"):
        bench.run_benchmark(quick=True, log=lambda line: None)


def test_a_dead_site_process_fails_the_wait_with_its_error(tmp_path):
    (tmp_path / "sites_0.err").write_text("Traceback ...\nImportError: no veil here")
    worker = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    worker.wait()
    with pytest.raises(VeilError, match=r"site process 0 failed: .*no veil here"):
        bench.wait_for_run({}, [worker], tmp_path)
    (tmp_path / "sites_0.out").write_text("")
    with pytest.raises(VeilError, match="site process 0 failed"):
        bench.site_outcomes([worker], tmp_path)


def test_certificates_are_issued_once_and_only_for_new_sites(tmp_path):
    folder = bench.ensure_certificates(tmp_path / "certs", ["client_0"])
    first = (folder / "sites" / "client_0.pem").read_bytes()
    bench.ensure_certificates(folder, ["client_0", "client_1"])
    assert (folder / "sites" / "client_0.pem").read_bytes() == first
    assert (folder / "sites" / "client_1.pem").exists() and (folder / "server.pem").exists()


# --- the figures -----------------------------------------------------------------------------


def test_summarize_counts_rounds_two_to_r_per_client():
    figures = bench.summarize(
        round_seconds=[5.0, 1.0, 2.0, 3.0],
        round_ends=[10.0, 12.0, 15.0, 19.0],
        traffic=[(1000, 500), (7000, 3500)],
        clients=2,
        sites_per_round=[2, 2, 1, 2],
    )
    assert figures["rounds_measured"] == 3
    assert figures["rounds_per_minute"] == pytest.approx(60 * 3 / 9)
    assert figures["p50_round_s"] == pytest.approx(2.0)
    assert figures["p99_round_s"] == pytest.approx(1 + 0.99 * 2)  # linear between 1 and 3
    assert figures["first_round_s"] == 5.0
    assert figures["bytes_sent_per_client_round"] == pytest.approx(6000 / 6)
    assert figures["bytes_received_per_client_round"] == pytest.approx(3000 / 6)
    assert figures["sites_per_round"] == 1


def test_summarize_refuses_a_run_without_every_reading():
    with pytest.raises(VeilError, match="needs every round \\(at least 2\\)"):
        bench.summarize([1.0], [2.0], [(0, 0), (1, 1)], 2, [2])
    with pytest.raises(VeilError, match="readings after round 1 and the last"):
        bench.summarize([1.0, 1.0], [2.0, 3.0], [(0, 0)], 2, [2, 2])


def test_flower_fits_or_says_how_much_memory_it_needs(monkeypatch):
    measured = {"memory_per_node_mib": 280.0, "clients": 20}
    monkeypatch.setattr(bench, "available_memory_bytes", lambda: 20 * 2**30)
    reason = bench.flower_does_not_fit(200, measured)
    assert "200 SuperNodes do not fit" in reason and "280 MiB" in reason
    assert "need 54.7 GiB" in reason and "20.0 GiB is available" in reason
    assert bench.flower_does_not_fit(50, measured) is None


# --- bytes on the wire -----------------------------------------------------------------------


def test_parse_connections_keeps_only_the_given_processes_connections():
    assert traffic.parse_connections(SS_LISTING, {11}) == {
        ("127.0.0.1:40000", "501"): (101, 50),
        ("127.0.0.1:40001", "502"): (10, 0),  # ss leaves out a counter that is still 0
    }
    assert len(traffic.parse_connections(SS_LISTING, {11, 22})) == 3
    assert traffic.parse_connections(SS_LISTING, {33}) == {}
    assert traffic.parse_connections("", {11}) == {}


def _exchange(port: int, send: int, expect: int, linger: float) -> None:
    """Connect to ``port``, send ``send`` bytes, read ``expect`` bytes back, wait ``linger``
    seconds, close."""
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"x" * send)
        got = 0
        while got < expect:
            got += len(client.recv(65536))
        time.sleep(linger)


@needs_ss
def test_traffic_meter_counts_what_this_process_sent_and_received_over_closed_connections():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def answer(connections: int) -> None:
            for _ in range(connections):
                connection, _ = listener.accept()
                with connection:
                    received = 0
                    while received < 10_000:
                        received += len(connection.recv(65536))
                    connection.sendall(b"y" * 3000)
                    connection.recv(1)  # until the client closes

        server = threading.Thread(target=answer, args=(2,))
        server.start()
        meter = traffic.TrafficMeter(port, [os.getpid()], interval=0.05).start()
        elsewhere = traffic.TrafficMeter(port, [os.getpid() + 10**6], interval=0.05).start()
        try:
            for _ in range(2):  # the meter reads each connection while it is open
                _exchange(port, 10_000, 3000, linger=0.3)
            server.join()
            sent, received = meter.read()
        finally:
            meter.stop()
            elsewhere.stop()
    assert 20_000 <= sent <= 20_004  # bytes_acked counts the SYN (and the FIN) of each
    assert 6000 <= received <= 6002
    assert elsewhere.read() == (0, 0)


# --- veil's deployment, end to end -----------------------------------------------------------


@needs_ss
def test_measure_veil_runs_every_site_every_round_and_counts_the_model_on_the_wire(tmp_path):
    figures = bench.measure_veil(2, 2, 1, secure=False, folder=tmp_path)
    assert figures["sites_finished"] == 2 and figures["sites_per_round"] == 2
    assert figures["rounds_measured"] == 1 and figures["rounds_per_minute"] > 0
    assert 0 < figures["p50_round_s"] <= figures["p99_round_s"]
    # Each round, a site receives the model and sends its update: 650 float32 each way, plus
    # TLS, HTTP/2 and the idle long polls; far less than the model twice over.
    for direction in ("bytes_sent_per_client_round", "bytes_received_per_client_round"):
        assert PARAM_BYTES < figures[direction] < 3 * PARAM_BYTES


@pytest.mark.slow
@needs_ss
def test_secagg_costs_each_site_more_bytes_than_plain_fedavg(tmp_path):
    plain = bench.measure_veil(3, 3, 1, secure=False, folder=tmp_path)
    secure = bench.measure_veil(3, 3, 1, secure=True, folder=tmp_path)
    assert secure["sites_per_round"] == 3 and secure["sites_finished"] == 3
    # keys, encrypted shares and the masked 32-bit vector on top of the training round
    assert secure["bytes_sent_per_client_round"] > plain["bytes_sent_per_client_round"] + 500


# --- the Flower peer -------------------------------------------------------------------------


def test_flower_peer_refuses_a_run_it_cannot_measure(tmp_path):
    with pytest.raises(ValueError, match="nodes >= 1 and rounds >= 2"):
        peer.run_flower_deployment(2, 1, tmp_path, tmp_path)


def test_resident_bytes_counts_a_live_process_and_nothing_for_a_dead_one():
    status = Path("/proc/self/status").read_text()
    own = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    assert peer.resident_bytes(os.getpid()) >= 0.5 * own * 1024
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    assert peer.resident_bytes(finished.pid) == 0


def test_flower_client_app_does_one_epoch_of_softmax_regression_like_veils_sites():
    pytest.importorskip("flwr")
    app_folder = str(Path(peer.APP))
    sys.path.insert(0, app_folder)
    try:
        client = importlib.import_module("flower_load.client_app")
    finally:
        sys.path.remove(app_folder)
    x, y = client.local_rows(3)
    assert x.shape == (7, 64) and set(y) <= set(range(10))
    weight, bias = np.zeros((10, 64), np.float32), np.zeros(10, np.float32)
    new_weight, new_bias = client.sgd_epoch(weight, bias, x, y)

    def loss(w, b):
        logits = x @ w.T + b
        logits = logits - logits.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(7), y]))

    assert loss(new_weight, new_bias) < loss(weight, bias) - 0.05
    assert not weight.any()  # the caller's arrays are left alone


@pytest.mark.slow
@needs_ss
def test_quick_benchmark_through_the_cli_compares_veil_with_flowers_deployment():
    pytest.importorskip("flwr")
    veil = Path(sys.executable).parent / "veil"
    done = subprocess.run(
        [str(veil), "bench", "deploy", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["workload"] == "deploy" and result["clients"] == bench.QUICK["clients"]
    plain, secure, flower = result["veil"]["plain"], result["veil"]["secagg"], result["peer"]
    assert "error" not in flower and flower["clients"] == result["clients"]
    for figures in (plain, secure, flower):
        assert figures["sites_per_round"] == result["clients"]
        assert figures["bytes_received_per_client_round"] > PARAM_BYTES
    assert secure["bytes_sent_per_client_round"] > plain["bytes_sent_per_client_round"]
    ratio = plain["rounds_per_minute"] / flower["rounds_per_minute"]
    assert result["ratio"] == pytest.approx(ratio)
