"""`veil bench` without the bench extra fails fast with one line, not after minutes of timing."""

import importlib.util

import pytest
from typer.testing import CliRunner

from veil.cli import app


@pytest.mark.skipif(importlib.util.find_spec("flwr") is not None, reason="bench extra installed")
def test_fl_sim_without_the_bench_extra_says_how_to_get_it():
    result = CliRunner().invoke(app, ["bench", "fl-sim", "--quick"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: fl-sim needs the bench extra (Flower, Ray): run `make bench`"
    ]


@pytest.mark.skipif(importlib.util.find_spec("opacus") is not None, reason="bench extra installed")
def test_dp_sgd_without_the_bench_extra_says_how_to_get_it():
    result = CliRunner().invoke(app, ["bench", "dp-sgd", "--quick"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: dp-sgd needs the bench extra (Opacus): run `make bench`"
    ]


@pytest.mark.skipif(importlib.util.find_spec("flwr") is not None, reason="bench extra installed")
def test_secagg_without_the_bench_extra_says_how_to_get_it():
    result = CliRunner().invoke(app, ["bench", "secagg", "--quick"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: secagg needs the bench extra (Flower, Ray): run `make bench`"
    ]
