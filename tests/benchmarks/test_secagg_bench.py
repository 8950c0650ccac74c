"""The veil side of W3 (``benchmarks/secagg.py``) at a tiny size: exact, and honest byte counts."""

import pytest

from veil.cli import find_benchmark


@pytest.mark.parametrize("hybrid", [False, True])
def test_time_veil_reports_an_exact_round(hybrid):
    result = find_benchmark("secagg").time_veil(8, 500, 0.25, hybrid=hybrid)
    assert result["exact"] and result["dropped_after_masked_input"] == 2
    assert result["max_float_error"] < 1e-3
    assert result["bytes_ratio"] > 1 and result["server_s"] > 0 and result["client_s"] > 0
