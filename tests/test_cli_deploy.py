import json
import socket
import threading

import pytest
from typer.testing import CliRunner

import veil.cli_deploy  # noqa: F401  (registers the commands on the app)
from veil.cli import app
from veil.runtime.grpc.client import SiteOptions, run_site
from veil.runtime.grpc.wire import Backoff

runner = CliRunner()


def one_error_line(result, message):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_certs_init_and_issue_print_the_files_they_write(tmp_path):
    folder = tmp_path / "certs"
    result = runner.invoke(app, ["certs", "init", str(folder), "--site", "a"])
    assert result.exit_code == 0, result.output
    written = result.stdout.split()
    assert [p.rsplit("/", 1)[-1] for p in written] == [
        "ca.key", "ca.pem", "server.key", "server.pem", "a.key", "a.pem",
    ]  # fmt: skip
    assert "keep" in result.stderr and "offline" in result.stderr
    result = runner.invoke(app, ["certs", "issue", str(folder), "b", "c"])
    assert result.exit_code == 0 and len(result.stdout.split()) == 4
    assert "PRIVATE KEY" not in result.output


def test_certs_errors_are_one_line(tmp_path):
    assert runner.invoke(app, ["certs", "init", str(tmp_path)]).exit_code == 0
    one_error_line(runner.invoke(app, ["certs", "init", str(tmp_path)]), "already exists")
    one_error_line(runner.invoke(app, ["certs", "issue", str(tmp_path), "a b"]), "site name")
    one_error_line(runner.invoke(app, ["certs", "issue", str(tmp_path / "x"), "a"]), "cannot read")


@pytest.mark.parametrize("flags", [[], ["--certs", "c", "--insecure"]])
def test_server_and_client_need_exactly_one_of_certs_and_insecure(tmp_path, flags):
    config = tmp_path / "run.yaml"
    config.write_text("name: t\n")
    message = "give --certs DIR (mutual TLS"
    one_error_line(runner.invoke(app, ["server", str(config), *flags]), message)
    one_error_line(
        runner.invoke(app, ["client", "--server", "h:1", "--site", "a", *flags]), message
    )


def test_a_bad_deployment_is_refused_before_listening(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("deployment: {sites: [client_0, hospital_x]}\n")
    result = runner.invoke(app, ["server", str(config), "--insecure", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "warning: --insecure" in result.stderr
    assert "error: deployment.sites lists ['hospital_x'], not clients" in result.stderr


def test_a_bad_site_name_is_refused_by_the_client(tmp_path):
    result = runner.invoke(app, ["client", "--server", "h:1", "--site", "../x", "--insecure"])
    one_error_line(result, "site name '../x' must be")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_veil_server_runs_a_deployment_and_writes_the_report(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr(
        "veil.runtime.grpc.coordinator.write_report", lambda m, path: written.append(path)
    )  # its plots are tested with `veil run`
    port = free_port()
    config = tmp_path / "run.yaml"
    config.write_text(
        "partition: {method: iid, num_clients: 2}\nfederation: {rounds: 1}\n"
        "client: {local_steps: 1}\ndeployment: {poll_seconds: 0.2}\n"
    )
    outcomes = []

    def site(name: str) -> None:  # it retries until the server listens
        options = SiteOptions(f"127.0.0.1:{port}", name, None, backoff=Backoff(0.05, 2, 0.2))
        outcomes.append(run_site(options))

    sites = [threading.Thread(target=site, args=(f"client_{i}",), daemon=True) for i in range(2)]
    for thread in sites:
        thread.start()
    result = runner.invoke(
        app,
        [
            "server",
            str(config),
            "--insecure",
            "--address",
            f"127.0.0.1:{port}",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    for thread in sites:
        thread.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "run" / "report.html")
    assert "warning: --insecure" in result.stderr and "claim: " in result.stderr
    assert "round 1: 2 of 2 sampled sites sent an update" in result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["final"]["rounds"] == 1 and outcomes == ["the run is over"] * 2
    assert written == [tmp_path / "run" / "report.html"]


def test_client_attest_needs_a_config_with_a_tee_section(tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text("federation: {rounds: 1}\n")
    argv = ["client", "--server", "127.0.0.1:1", "--site", "client_0", "--insecure"]
    result = runner.invoke(app, [*argv, "--attest", str(config)])
    one_error_line(result, "--attest needs a config with aggregation.tee")
