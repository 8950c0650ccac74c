import math

import pytest
import torch
from dp_accounting import dp_event

from veil.audit.canary import (
    audit_dp_fedavg,
    audit_dpsgd,
    canary_log_likelihood_ratio,
    most_exposed_client,
    run_audit,
)
from veil.config import load_config, parse_config
from veil.errors import ConfigError
from veil.experiment import build_experiment, execute
from veil.privacy.accounting import calibrate_noise_multiplier, dpsgd_epsilon, epsilon
from veil.randomness import InsecureNoiseWarning

pytestmark = pytest.mark.filterwarnings("ignore::veil.randomness.InsecureNoiseWarning")

RUNS = 20_000
FEDAVG_RUNS = 8_000  # a DP-FedAvg release is a dense [clients, runs] block: costlier per run
HOSPITALS_SIGMA = calibrate_noise_multiplier(8.0, 1.0, 15, 1e-5)  # as hospitals.yaml calibrates


def hospitals(**privacy):
    config = load_config("examples/hospitals.yaml")
    return config.model_copy(
        update={
            "privacy": config.privacy.model_copy(update={"noise_seed_for_testing": 7, **privacy})
        }
    )


# A sample-level config whose clients all train full-batch (q = 1) for two local steps: its
# accounting is fast, unlike the hospitals' Poisson batches of five different sizes.
FULL_BATCH_SAMPLE_LEVEL = {
    "partition": {"method": "iid", "num_clients": 3},
    "federation": {"rounds": 5},
    "client": {"batch_size": 256, "local_steps": 2, "lr": 0.1},
    "privacy": {
        "level": "sample",
        "target_epsilon": 4.0,
        "clip_norm": 0.1,
        "noise_seed_for_testing": 3,
    },
}


def test_log_likelihood_ratio_known_values():
    y = torch.tensor([0.0, 0.5, 1.0, 2.0])
    # q = 1: log N(y; 1, σ²) / N(y; 0, σ²) = (2y - 1) / (2σ²).
    expected = (2 * y.double() - 1) / (2 * 0.5**2)
    torch.testing.assert_close(canary_log_likelihood_ratio(y, 0.5, 1.0), expected)
    # q = 1/2 at y = 1/2: both Gaussians have the same density, so the mixture's ratio is 1.
    assert float(canary_log_likelihood_ratio(torch.tensor([0.5]), 0.7, 0.5)[0]) == 0.0
    # q → 0: the canary is never there, the ratio → 1.
    assert abs(float(canary_log_likelihood_ratio(torch.tensor([3.0]), 1.0, 1e-9)[0])) < 1e-6


@pytest.mark.parametrize(
    ("sigma", "rate", "steps"),
    [(1.0, 1.0, 1), (HOSPITALS_SIGMA, 1.0, 15), (1.0, 0.1, 50), (0.8, 0.05, 200), (3.0, 1.0, 4)],
)
def test_dpsgd_bound_never_exceeds_the_claim(sigma, rate, steps):
    result = audit_dpsgd(sigma, rate, steps, 1e-5, num_runs=RUNS, noise_seed_for_testing=1)
    assert result.claimed_epsilon == pytest.approx(dpsgd_epsilon(sigma, rate, steps, 1e-5))
    assert 0 <= result.bound.epsilon <= result.claimed_epsilon
    assert result.mechanism == "DP-SGD" and result.num_runs == RUNS


@pytest.mark.parametrize(
    ("sigma", "rate", "rounds", "decay", "accountant"),
    # hospitals' setting: test_run_audit_of_hospitals_claims_what_the_run_reports
    [(0.7, 0.2, 20, 1.0, "pld"), (1.0, 1.0, 5, 0.9, "rdp")],
)
def test_dp_fedavg_bound_never_exceeds_the_claim(sigma, rate, rounds, decay, accountant):
    result = audit_dp_fedavg(
        sigma,
        rate,
        rounds,
        1e-5,
        num_runs=FEDAVG_RUNS,
        noise_decay=decay,
        accountant=accountant,
        noise_seed_for_testing=2,
    )
    assert 0 <= result.bound.epsilon <= result.claimed_epsilon
    assert result.mechanism == "DP-FedAvg"


def test_dp_fedavg_claim_is_the_ledger_epsilon_of_its_rounds():
    result = audit_dp_fedavg(1.5, 1.0, 6, 1e-5, num_runs=64, noise_seed_for_testing=0)
    rounds = dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(1.5), 6)
    assert result.claimed_epsilon == pytest.approx(epsilon(rounds, 1e-5))


def test_white_box_audit_finds_signal_without_noise_and_none_with_much():
    weak = audit_dpsgd(0.3, 1.0, 1, 1e-5, num_runs=RUNS, noise_seed_for_testing=4)
    strong = audit_dpsgd(20.0, 1.0, 1, 1e-5, num_runs=RUNS, noise_seed_for_testing=4)
    assert weak.bound.epsilon > 4  # σ = 0.3: the canary shows in almost every run
    assert strong.bound.epsilon < 0.2  # σ = 20: ε = 0.16, nothing to see


def test_white_box_audit_confirms_a_good_part_of_a_moderate_claim():
    result = audit_dpsgd(1.0, 1.0, 1, 1e-5, num_runs=RUNS, noise_seed_for_testing=5)
    assert result.ratio >= 0.4  # ε = 4.4 claimed; 20k runs confirm about half of it


def test_likelihood_ratio_beats_the_plain_sum_under_subsampling():
    common = {"num_runs": RUNS, "noise_seed_for_testing": 6}
    ratio = audit_dpsgd(0.8, 0.05, 200, 1e-5, statistic="likelihood_ratio", **common)
    plain = audit_dpsgd(0.8, 0.05, 200, 1e-5, statistic="sum", **common)
    assert ratio.bound.epsilon > plain.bound.epsilon + 0.5


def test_audit_noise_is_os_seeded_unless_a_test_seed_is_given():
    first = audit_dpsgd(1.0, 1.0, 2, 1e-5, num_runs=64)
    second = audit_dpsgd(1.0, 1.0, 2, 1e-5, num_runs=64)
    assert not (first.scores_in == second.scores_in).all()
    with pytest.warns(InsecureNoiseWarning):
        audit_dpsgd(1.0, 1.0, 2, 1e-5, num_runs=64, noise_seed_for_testing=1)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_runs": 4}, "num_runs must be an integer >= 8"),
        ({"statistic": "max"}, "statistic must be one of"),
        ({"sigma": -1.0}, "noise multiplier must be > 0"),
        ({"rate": 1.5}, r"sample rate must be in \(0, 1\]"),
    ],
)
def test_dpsgd_audit_refuses_bad_input(arguments, message):
    sigma, rate = arguments.pop("sigma", 1.0), arguments.pop("rate", 1.0)
    with pytest.raises(ConfigError, match=message):
        audit_dpsgd(sigma, rate, 3, 1e-5, **{"num_runs": 64, **arguments})


@pytest.mark.parametrize(
    ("rounds", "sigma", "message"),
    [(0, 1.0, "rounds must be an integer >= 1"), (3, 0.0, "noise_multiplier must be > 0")],
)
def test_dp_fedavg_audit_refuses_bad_input(rounds, sigma, message):
    with pytest.raises(ConfigError, match=message):
        audit_dp_fedavg(sigma, 1.0, rounds, 1e-5, num_runs=64)


def test_run_audit_of_hospitals_claims_what_the_run_reports():
    config = hospitals()
    result = run_audit(config, num_runs=2_000)
    run = execute(build_experiment(config))
    assert result.claimed_epsilon == pytest.approx(run["final"]["epsilon"], rel=1e-9)
    assert result.mechanism == "DP-FedAvg"
    assert result.threat_model == "white-box gradient canary"
    assert 0 < result.bound.epsilon <= result.claimed_epsilon
    data = result.to_json()
    assert data["claimed_epsilon"] == result.claimed_epsilon
    assert data["empirical_epsilon_lower_bound"] == result.bound.epsilon
    assert data["ratio"] == pytest.approx(result.bound.epsilon / result.claimed_epsilon)
    assert (data["delta"], data["num_runs"], data["confidence"]) == (1e-5, 2_000, 0.95)
    assert data["noise_multiplier"] == pytest.approx(HOSPITALS_SIGMA)


def test_run_audit_of_sample_level_dp_audits_dpsgd_with_the_run_claim():
    config = parse_config(FULL_BATCH_SAMPLE_LEVEL)
    result = run_audit(config, num_runs=RUNS, seed=1)
    run = execute(build_experiment(config))
    assert result.mechanism == "DP-SGD"
    assert result.claimed_epsilon == pytest.approx(run["final"]["epsilon"], rel=1e-9)
    assert (result.settings["sample_rate"], result.settings["steps"]) == (1.0, 10)
    assert 0 < result.bound.epsilon <= result.claimed_epsilon


def test_most_exposed_client_is_the_one_with_the_run_epsilon():
    # hospitals' smallest site (16 rows) trains full-batch: q = 1 beats the others' Poisson
    # batches, so its records carry the run's ε (RDP and a given σ keep the accounting quick).
    config = hospitals(level="sample", target_epsilon=None, noise_multiplier=2.0, accountant="rdp")
    experiment = build_experiment(config)
    client = most_exposed_client(experiment)
    assert experiment.data.train_sizes[client] == experiment.data.train_sizes.min()


@pytest.mark.parametrize(
    ("change", "white_box", "message"),
    [
        ({"privacy": None}, True, "the config has no privacy section"),
        (
            {"privacy": {"target_epsilon": 8.0, "adaptive_clipping": True}},
            True,
            "does not cover adaptive clipping",
        ),
        ({"secure_aggregation": {"neighbors": 4}}, True, "measures central DP-FedAvg"),
        ({}, False, "the black-box audit uses an input-space canary record"),
    ],
)
def test_run_audit_refuses_what_it_cannot_audit(change, white_box, message):
    data = {"privacy": {"target_epsilon": 8.0}, **change}
    with pytest.raises(ConfigError, match=message):
        run_audit(parse_config(data), white_box=white_box, num_runs=64)


def test_run_audit_refuses_other_tasks():
    config = parse_config({"task": "frequency_estimation", "frequency": {"num_phones": 10}})
    with pytest.raises(ConfigError, match="audits task federated_training"):
        run_audit(config)


def test_report_section_shows_the_histogram_and_numbers():
    result = audit_dpsgd(1.0, 1.0, 1, 1e-5, num_runs=2000, noise_seed_for_testing=8)
    section = result.report_section()
    assert section.html.count("<svg") == 1
    assert "white-box gradient canary" in section.title
    assert f"{result.claimed_epsilon:.4g}" in section.html
    assert math.isfinite(result.ratio)
