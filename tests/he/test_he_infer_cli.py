"""`veil he-infer`: JSON schema, agreement with plaintext, and one-line errors."""

import json

from typer.testing import CliRunner

from veil.cli import app


def test_json_output_agrees_with_plaintext():
    result = CliRunner().invoke(app, ["he-infer", "--samples", "3", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert {
        "model",
        "samples",
        "max_abs_error",
        "accuracy_plain",
        "accuracy_encrypted",
        "latency_ms",
        "query_bytes",
        "score_bytes",
        "parameters",
    } <= data.keys()
    assert data["samples"] == 3 and data["max_abs_error"] <= 1e-3
    assert {"encrypt", "evaluate", "decrypt", "total"} <= data["latency_ms"].keys()
    assert data["parameters"]["security_bits"] == 128


def test_bad_arguments_exit_2_with_one_line():
    for arguments, message in [
        (["--samples", "0"], "samples must be in 1..114"),
        (["--model", "svm"], "svm"),
        (["--packing", "rows"], "rows"),
    ]:
        result = CliRunner().invoke(app, ["he-infer", *arguments])
        assert result.exit_code == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines
