import itertools
import json

import numpy as np
import pytest

from veil.config import parse_config
from veil.errors import ConfigError
from veil.experiment import build_local_training, run_experiment
from veil.privacy.accounting import dpsgd_epsilon
from veil.privacy.federated import client_sampling, dp_plan
from veil.privacy.ledger import PrivacyLedger

BASE = {
    "data": {"dataset": "breast_cancer"},
    "partition": {"method": "iid", "num_clients": 20},
    "model": {"name": "logistic"},
    "federation": {"rounds": 4, "poisson_rate": 0.5},
    "client": {"local_steps": 2, "batch_size": 8, "lr": 0.1},
}


def config(**privacy):
    return parse_config({**BASE, "privacy": {"noise_multiplier": 1.0, **privacy}})


def test_client_sampling_for_accounting():
    assert client_sampling(config(), 20) == (0.5, 10.0)
    everyone = parse_config(
        {**BASE, "federation": {"rounds": 2}, "privacy": {"noise_multiplier": 1}}
    )
    assert client_sampling(everyone, 20) == (1.0, 20.0)
    fixed = parse_config(
        {**BASE, "federation": {"clients_per_round": 5}, "privacy": {"noise_multiplier": 1}}
    )
    with pytest.raises(
        ConfigError, match=r"set federation.poisson_rate, .* \(got 5 of 20 per round\)"
    ):
        client_sampling(fixed, 20)


def test_target_epsilon_is_calibrated_over_the_planned_rounds():
    target = parse_config({**BASE, "privacy": {"target_epsilon": 3.0}})
    plan = dp_plan(target, build_local_training(target), np.full(20, 20))
    spent = dpsgd_epsilon(plan.noise_multiplier, 0.5, 4, 1e-5)
    assert spent <= 3.0 and spent > 2.9
    assert plan.ledger.budget_epsilon == 3.0


def test_claim_states_the_guarantee():
    clipped = config(clip_norm=0.5)
    claim = dp_plan(clipped, build_local_training(clipped), np.full(20, 20)).claim(1.234, 4)
    assert (
        "(ε = 1.23, δ = 1e-05)-differentially private at the client level after 4 rounds" in claim
    )
    assert "clip norm 0.5" in claim and "client sampling rate 0.5" in claim and "PLD" in claim


def test_dp_run_reports_epsilon_per_round_from_its_ledger(tmp_path):
    metrics = run_experiment(config(), tmp_path)
    epsilons = [r["epsilon"] for r in metrics["rounds"]]
    assert all(b > a > 0 for a, b in itertools.pairwise(epsilons))
    ledger = PrivacyLedger.load(tmp_path / "privacy_ledger.jsonl")
    assert ledger.releases == 4 and metrics["final"]["epsilon"] == pytest.approx(ledger.epsilon())
    assert metrics["final"]["epsilon"] == pytest.approx(dpsgd_epsilon(1.0, 0.5, 4, 1e-5))
    assert metrics["final"]["delta"] == 1e-5 and "client level" in metrics["final"]["claim"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["final"]["ledger"] == str(tmp_path / "privacy_ledger.jsonl")


def test_training_stops_cleanly_at_the_last_affordable_round(tmp_path):
    budget = dpsgd_epsilon(1.0, 0.5, 2, 1e-5) * 1.01  # two rounds fit, the third does not
    metrics = run_experiment(config(budget_epsilon=budget), tmp_path)
    assert metrics["final"]["rounds"] == 2 and len(metrics["rounds"]) == 2
    assert "over the budget" in metrics["final"]["stopped"]
    assert metrics["final"]["epsilon"] <= budget
    again = run_experiment(config(budget_epsilon=budget), tmp_path)  # same data, same ledger
    assert again["final"]["rounds"] == 0 and again["rounds"] == []
    assert again["final"]["epsilon"] == pytest.approx(metrics["final"]["epsilon"])


def test_sample_level_dp_run_accounts_every_client_separately(tmp_path):
    sample = config(level="sample", clip_norm=1.0)
    metrics = run_experiment(sample, tmp_path)
    ledger = PrivacyLedger.load(tmp_path / "privacy_ledger.jsonl")
    assert set(ledger.events) <= {f"client_{i}" for i in range(20)} and len(ledger.events) > 5
    assert metrics["final"]["epsilon"] == pytest.approx(ledger.max_epsilon())
    assert metrics["final"]["engine"] == "dpsgd"
    assert "Every training record is" in metrics["final"]["claim"]
    assert "each client adds the noise itself" in metrics["final"]["claim"]


def test_sample_level_target_epsilon_covers_the_worst_client():
    target = parse_config({**BASE, "privacy": {"level": "sample", "target_epsilon": 2.0}})
    local = build_local_training(target)
    sizes = np.array([10, 16, 40, 100])
    plan = dp_plan(target, local, sizes)
    for n in sizes:
        q = min(1.0, local.batch_size / n)
        assert dpsgd_epsilon(plan.noise_multiplier, q, local.num_steps(int(n)) * 4, 1e-5) <= 2.0


def test_adaptive_clipping_and_decaying_noise_run():
    metrics = run_experiment(config(adaptive_clipping=True, noise_decay=0.9))
    assert len(metrics["rounds"]) == 4 and metrics["final"]["epsilon"] > 0
    assert (
        "adaptive clip norm" in metrics["final"]["claim"]
        and "decaying" in metrics["final"]["claim"]
    )


@pytest.mark.parametrize(
    ("privacy", "message"),
    [
        ({}, "set exactly one of noise_multiplier and target_epsilon"),
        ({"noise_multiplier": 1, "target_epsilon": 1}, "set exactly one of"),
        ({"target_epsilon": 1, "noise_decay": 0.9}, "noise_decay < 1 needs noise_multiplier"),
        ({"noise_multiplier": 1, "bit_noise_multiplier": 2}, "only with adaptive_clipping"),
        ({"noise_multiplier": 1, "delta": 1}, r"privacy.delta: Input should be less than 1"),
        (
            {"noise_multiplier": 1, "level": "sample", "adaptive_clipping": True},
            "only to level: client",
        ),
        (
            {"noise_multiplier": 1, "accountant": "gdp"},
            r"privacy.accountant: Input should be 'pld' or 'rdp'",
        ),
    ],
)
def test_bad_privacy_config(privacy, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({**BASE, "privacy": privacy})
