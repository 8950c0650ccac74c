import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from veil.cli import app

runner = CliRunner()


def test_default_run_is_the_private_hospitals_example(tmp_path):
    """`veil run` with no config runs examples/hospitals.yaml (accuracy: tests/test_examples.py)."""
    result = runner.invoke(app, ["run", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["name"] == "hospitals"
    assert metrics["final"]["epsilon"] == pytest.approx(8.0, rel=0.01)
    assert metrics["final"]["delta"] == 1e-5 and "client level" in metrics["final"]["claim"]
    assert (tmp_path / "report.html").stat().st_size > 10_000
    assert (tmp_path / "privacy_ledger.jsonl").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "federation:\n  rounds: 0\n",
            "federation.rounds: Input should be greater than or equal to 1",
        ),
        ("partition: {method: dirichlet, alpha: -1}\n", "partition.alpha"),
        ("model: {name: transformer}\n", "model.name"),
        ("client: {batch_size: 1, lr: [}\n", "invalid YAML"),
        # found only once the data is loaded, still before any progress output:
        ("partition: {method: iid, num_clients: 100000}\n", "num_clients"),
        ("federation: {clients_per_round: 50}\n", "federation.clients_per_round must be in [1, 5]"),
        ("model: {name: cnn}\n", "cnn needs image data"),
        ("runtime: {device: 'cuda:x'}\n", "runtime.device"),
        # rich markup in user text is printed, not interpreted:
        ("name: '[/x]'\nmodel: {name: '[/b]'}\n", "model.name"),
        ('"[/foo]": 1\n', "[/foo]: unknown key"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("error: ")


def test_real_process_prints_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("federation: {rounds: 0}\n")
    result = subprocess.run(
        [sys.executable, "-m", "veil", "run", str(path), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: federation.rounds: Input should be greater than or equal to 1 (got 0)"
    ]


def test_output_directory_that_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["run", "--out", str(blocker / "sub")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: output directory {blocker / 'sub'} cannot be created: Not a directory"
    ]


def test_missing_config_and_unknown_benchmark():
    result = runner.invoke(app, ["run", "no/such.yaml"])
    assert result.exit_code == 2 and "config file not found" in result.output
    result = runner.invoke(app, ["bench", "no-such-workload"])
    assert result.exit_code == 2 and "unknown benchmark 'no-such-workload'" in result.output
    assert "fl-sim" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("veil ")


def test_usage_errors_are_one_line_too():
    result = subprocess.run(
        [sys.executable, "-m", "veil", "epsilon", "--steps", "abc"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: Invalid value for '--steps': 'abc' is not a valid integer."
    ]
