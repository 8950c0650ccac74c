"""The W5 harness (``benchmarks/mpc.py``) at one epoch: honest fields, and a missing peer."""

import pytest

from veil.cli import find_benchmark


def test_veil_and_plaintext_report_time_bytes_and_accuracy():
    bench = find_benchmark("mpc")
    plain = bench.time_plaintext(parties=2, epochs=1, repeats=1)
    assert plain["seconds"] > 0 and plain["torch_seconds"] > 0 and plain["accuracy"] > 0.9
    veil = bench.time_veil(parties=2, epochs=1)
    assert veil["accuracy"] > 0.9 and veil["seconds"] > 0 and veil["bytes"] > 0
    assert veil["offline_bytes"] > 0 and veil["wall_seconds"] >= veil["seconds"]
    assert veil["sigmoid"] == "polynomial" and "garbled_circuit" not in veil["per_operation"]


def test_the_garbled_sigmoid_can_still_be_benchmarked():
    veil = find_benchmark("mpc").time_veil(parties=2, epochs=1, sigmoid="piecewise")
    assert veil["sigmoid"] == "piecewise" and veil["accuracy"] > 0.9
    assert veil["per_operation"]["garbled_circuit"]["rounds"] == 15  # one comparison batch a step


@pytest.mark.slow
def test_a_crypten_that_cannot_run_is_reported_not_skipped(monkeypatch, tmp_path):
    bench = find_benchmark("mpc")
    monkeypatch.setenv("VEIL_CRYPTEN_PATH", str(tmp_path))  # an empty folder: no CrypTen there
    result = bench.time_crypten(parties=2, epochs=1)
    assert result["parties"] == 2 and "No module named 'crypten'" in result["error"]


@pytest.mark.slow
def test_quick_benchmark_has_the_contract_keys():
    result = find_benchmark("mpc").run_benchmark(quick=True, log=lambda _: None)
    assert result["workload"] == "mpc" and result["peer"]["name"] == "crypten"
    assert {"seconds", "bytes", "accuracy"} <= set(result["veil"])
    assert {"seconds", "accuracy"} <= set(result["plaintext"])
    assert result["ratio"] == result["veil"]["seconds"] / result["plaintext"]["seconds"]
