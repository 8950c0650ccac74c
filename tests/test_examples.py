"""Every shipped example parses, and the hospitals examples reach their accuracy targets."""

import statistics
import warnings
from pathlib import Path

import pytest

from veil.config import load_config, parse_config
from veil.experiment import run_experiment
from veil.randomness import InsecureNoiseWarning

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_parses(path):
    assert load_config(path).name == path.stem


def test_plain_fedavg_hospitals_reach_0_95():
    metrics = run_experiment(load_config(EXAMPLES / "hospitals_fedavg.yaml"))
    assert metrics["final"]["accuracy"] >= 0.95 and metrics["final"]["epsilon"] is None


def runs_with_test_noise(example: str, draws: int) -> list[dict]:
    """Final metrics of ``example`` for noise seeds 0 .. draws-1 (reproducible, not private)."""
    data = load_config(EXAMPLES / example).model_dump()
    finals = []
    for seed in range(draws):
        data["privacy"]["noise_seed_for_testing"] = seed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureNoiseWarning)
            finals.append(run_experiment(parse_config(data))["final"])
    return finals


def test_private_hospitals_reach_0_90_at_the_stated_epsilon():
    """DP noise is random by design; over five fixed test noise draws the median must reach 0.90
    (measured over 25 secure draws: mean 0.937, min 0.904)."""
    finals = runs_with_test_noise("hospitals.yaml", 5)
    assert all(f["epsilon"] <= 8.0 for f in finals)
    accuracies = [f["accuracy"] for f in finals]
    assert statistics.median(accuracies) >= 0.90 and min(accuracies) >= 0.85, accuracies


def test_secagg_hospitals_reach_0_90_with_distributed_dp():
    """SecAgg+ with distributed DP: noise is counted for 3 survivors but all 5 add it, so the
    sum carries 5/3 of the needed variance; the median over three test draws must reach 0.90."""
    finals = runs_with_test_noise("hospitals_secagg.yaml", 3)
    assert all(f["epsilon"] <= 8.0 for f in finals)
    assert all("masked sum of at least 3 clients" in f["claim"] for f in finals)
    accuracies = [f["accuracy"] for f in finals]
    assert statistics.median(accuracies) >= 0.90, accuracies


def test_encrypted_hospitals_reach_0_90_with_noise_before_encryption():
    """Packed BFV with each hospital's DP share added before encrypting (10 secure draws:
    mean 0.934, min 0.896); the median over three test draws must reach 0.90."""
    finals = runs_with_test_noise("hospitals_he.yaml", 3)
    assert all(f["epsilon"] <= 8.0 for f in finals)
    assert all("the aggregator sees only ciphertexts" in f["claim"] for f in finals)
    accuracies = [f["accuracy"] for f in finals]
    assert statistics.median(accuracies) >= 0.90, accuracies
