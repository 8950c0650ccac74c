"""`aggregation.robust` in the YAML: validation, and the links it puts in the round plan."""

import pytest

from veil.config import parse_config
from veil.errors import ConfigError
from veil.experiment import build_experiment, clients_per_round, execute


def robust(**section):
    return {"aggregation": {"robust": section}, "federation": {"rounds": 2}}


@pytest.mark.parametrize(
    "section",
    [
        {"method": "krum", "num_byzantine": 1},
        {"method": "multi_krum", "num_byzantine": 1, "num_selected": 2},
        {"method": "median"},
        {"method": "trimmed_mean", "trim_fraction": 0.2},
        {"method": "norm_bounding", "max_norm": 0.5, "noise_std": 0.001},
    ],
)
def test_every_robust_aggregator_trains_the_default_federation(section):
    metrics = execute(build_experiment(parse_config(robust(**section))))
    assert metrics["final"]["accuracy"] > 0.85


def test_norm_bounding_composes_with_secure_aggregation():
    config = robust(method="norm_bounding", max_norm=0.5)
    config["secure_aggregation"] = {"clip_norm": 1.0}
    metrics = execute(build_experiment(parse_config(config)))
    assert metrics["final"]["accuracy"] > 0.85


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (robust(method="krum"), "method 'krum' needs num_byzantine"),
        (robust(method="median", max_norm=1.0), "max_norm applies only to method norm_bounding"),
        (robust(method="mean"), "aggregation.robust.method"),
        (
            {**robust(method="median"), "privacy": {"noise_multiplier": 1.0}},
            "client-level DP calibrates its noise",
        ),
    ],
)
def test_bad_robust_sections_are_refused_by_the_config(config, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(config)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"secure_aggregation": {"clip_norm": 1.0}}, "cannot run on a SecAgg\\+ masked sum"),
        ({"encryption": {"clip_norm": 1.0}}, "cannot run on an encrypted"),
    ],
)
def test_krum_cannot_run_on_a_secure_sum(extra, message):
    with pytest.raises(ConfigError, match=message):
        build_experiment(parse_config({**robust(method="krum", num_byzantine=1), **extra}))


def test_krum_needs_enough_clients_per_round():
    with pytest.raises(ConfigError, match="more than 2f \\+ 2 = 6 clients per round"):
        build_experiment(parse_config(robust(method="krum", num_byzantine=2)))


def test_robust_aggregation_with_sample_level_dp_is_post_processing():
    config = {**robust(method="median"), "privacy": {"level": "sample", "noise_multiplier": 1.0}}
    experiment = build_experiment(parse_config(config))
    assert experiment.plan.local.dp is not None


def test_clients_per_round_under_each_sampling_scheme():
    def count(federation, n=10):
        return clients_per_round(parse_config({"federation": federation}), n)

    assert count({"clients_per_round": 3}) == 3
    assert count({"clients_per_round": 30}) == 10
    assert count({"fraction": 0.25}) == 3  # halves round up, as FractionSampler draws
    assert count({"poisson_rate": 0.5}) == 5
    assert count({}) == 5  # everyone: partition.num_clients (5 by default)
