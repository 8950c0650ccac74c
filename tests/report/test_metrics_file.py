"""Tests of veil.report.metrics_file: atomic writes and clear read errors."""

from __future__ import annotations

import json
import math
import os
import stat

import pytest

from veil.errors import ConfigError
from veil.report.metrics_file import read_metrics, write_json_atomic, write_text_atomic

METRICS = {
    "config": {"name": "hospitals", "rounds": 2},
    "rounds": [{"round": 1, "accuracy": 0.9, "loss": 0.3, "epsilon": None, "seconds": 0.1}],
    "final": {"accuracy": 0.9, "loss": 0.3, "epsilon": None, "delta": None, "claim": "ε-free"},
}


def test_write_json_atomic_round_trips_and_leaves_only_the_target(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic(METRICS, path)
    assert read_metrics(path) == METRICS
    assert os.listdir(tmp_path) == ["metrics.json"]
    assert path.read_text(encoding="utf-8").endswith("}\n")


def test_write_json_atomic_replaces_previous_content(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic({"rounds": []}, path)
    write_json_atomic(METRICS, str(path))
    assert read_metrics(str(path)) == METRICS
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_write_json_atomic_creates_missing_directories(tmp_path):
    path = tmp_path / "runs" / "demo" / "metrics.json"
    write_json_atomic(METRICS, path)
    assert read_metrics(path) == METRICS


def test_write_json_atomic_keeps_non_finite_floats_readable(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic({"loss": math.nan, "epsilon": math.inf}, path)
    metrics = read_metrics(path)
    assert math.isnan(metrics["loss"])
    assert metrics["epsilon"] == math.inf


def test_unencodable_object_leaves_previous_file_intact(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic(METRICS, path)
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json_atomic({"rounds": [object()]}, path)
    assert read_metrics(path) == METRICS
    assert os.listdir(tmp_path) == ["metrics.json"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failure_while_writing_removes_temporary_and_keeps_previous_file(
    tmp_path, monkeypatch, failing
):
    path = tmp_path / "metrics.json"
    write_json_atomic(METRICS, path)

    def fail(*args):
        raise OSError(f"simulated {failing} failure")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match=f"simulated {failing} failure"):
        write_json_atomic({"rounds": []}, path)
    monkeypatch.undo()
    assert read_metrics(path) == METRICS
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_write_text_atomic_writes_exact_utf8_text(tmp_path):
    path = tmp_path / "report.html"
    text = "<p>ε ≤ 1.0, δ = 1e-5</p>\r\n"
    write_text_atomic(text, path)
    assert path.read_bytes() == text.encode("utf-8")


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_written_file_gets_umask_permissions_not_private_temp_ones(tmp_path):
    umask = os.umask(0o022)
    try:
        path = tmp_path / "metrics.json"
        write_json_atomic(METRICS, path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    finally:
        os.umask(umask)


def test_read_metrics_missing_file(tmp_path):
    path = tmp_path / "metrics.json"
    with pytest.raises(ConfigError, match=r"metrics\.json does not exist; run `veil run"):
        read_metrics(path)


def test_read_metrics_directory(tmp_path):
    with pytest.raises(ConfigError, match=r"is a directory; pass the metrics\.json file inside it"):
        read_metrics(tmp_path)


def test_read_metrics_invalid_json_names_the_position(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"rounds": [', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"is not valid JSON \(.* at line 1, column 13\)"):
        read_metrics(path)


def test_read_metrics_not_utf8(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_bytes(b'{"name": "\xff"}')
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(.* at byte 10\)"):
        read_metrics(path)


@pytest.mark.parametrize(
    ("document", "kind"), [([], "array"), ("x", "string"), (3, "number"), (None, "null")]
)
def test_read_metrics_requires_an_object(tmp_path, document, kind):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ConfigError, match=f"holds a JSON {kind}, not an object"):
        read_metrics(path)
