"""`veil he-infer`: JSON schema, table output, and one-line exit-2 errors."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from veil.cli import app

runner = CliRunner()
KEYS = {
    "model",
    "packing",
    "samples",
    "samples_per_query",
    "max_abs_error",
    "accuracy_plain",
    "accuracy_encrypted",
    "latency_ms",
    "query_bytes",
    "score_bytes",
    "public_context_bytes",
    "parameters",
    "claim",
}


@pytest.mark.parametrize(
    ("arguments", "depth", "per_query"),
    [
        (["--model", "logistic", "--samples", "2"], 1, 1),
        (["--model", "mlp", "--samples", "20", "--packing", "batch", "--seed", "3"], 2, 20),
    ],
)
def test_json_schema(arguments, depth, per_query):
    result = runner.invoke(app, ["he-infer", *arguments, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == KEYS
    assert report["model"] == arguments[1] and report["samples_per_query"] == per_query
    assert 0 <= report["max_abs_error"] <= 1e-3
    assert report["accuracy_encrypted"] == report["accuracy_plain"]
    latency = report["latency_ms"]
    assert set(latency) == {"encrypt", "evaluate", "decrypt", "total"}
    assert all(value > 0 for value in latency.values())
    assert latency["total"] == pytest.approx(
        latency["encrypt"] + latency["evaluate"] + latency["decrypt"]
    )
    assert report["query_bytes"] > report["score_bytes"] > 10_000
    parameters = report["parameters"]
    assert parameters["poly_modulus_degree"] == 8192 and parameters["depth"] == depth
    assert parameters["log2_q"] <= 218 and parameters["security_bits"] == 128
    assert "never a decryption" in report["claim"]


def test_table_output():
    result = runner.invoke(app, ["he-infer", "--samples", "1"])
    assert result.exit_code == 0, result.output
    assert "latency_ms.evaluate" in result.stdout and "max_abs_error" in result.stdout


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--samples", "0"],
            "error: samples must be in 1..114, the breast cancer test rows (got 0)",
        ),
        (["--samples", "-3"], "error: samples must be in 1..114"),
        (["--samples", "500"], "error: samples must be in 1..114"),
        (["--model", "tree"], "error: model must be one of ('logistic', 'mlp') (got 'tree')"),
        (["--packing", "rows"], "error: packing must be one of ('sample', 'batch') (got 'rows')"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(arguments, message):
    result = runner.invoke(app, ["he-infer", *arguments, "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message)


def test_real_process_prints_no_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "veil", "he-infer", "--samples", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: samples must be in 1..114, the breast cancer test rows (got 0)"
    ]
