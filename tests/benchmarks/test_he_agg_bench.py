"""The W4 harness (``benchmarks/he_agg.py``) at a tiny size: honest sizes and errors."""

from veil.cli import find_benchmark


def test_time_scheme_reports_expansion_and_error_for_packed_bfv():
    bench = find_benchmark("he-agg")
    result = bench.time_scheme("bfv", bench.client_updates(3, 16384))
    assert 1.8 < result["expansion"] < 2.3 and result["lanes_per_slot"] == 2
    assert result["max_abs_error"] <= result["quantization_step"]
    assert result["encrypt_values_per_s"] > 0
