import pytest

from veil.config import parse_config
from veil.errors import ConfigError
from veil.experiment import build_experiment, run_experiment

BASE = {
    "partition": {"method": "iid", "num_clients": 4},
    "federation": {"rounds": 2},
    "encryption": {"scheme": "bfv", "clip_norm": 1.0},
}


@pytest.mark.parametrize("scheme", ["bfv", "ckks"])
def test_encrypted_run_matches_the_plain_mean_run(scheme):
    plain = run_experiment(
        parse_config(
            {**BASE, "encryption": None, "secure_aggregation": None, "client": {"batch_size": 1000}}
        )
    )
    config = {
        **BASE,
        "encryption": {"scheme": scheme, "clip_norm": 100.0},
        "client": {"batch_size": 1000},
    }
    encrypted = run_experiment(parse_config(config))
    # Equal-sized iid clients: FedAvg's weighted mean equals the unweighted mean.
    assert encrypted["final"]["accuracy"] == pytest.approx(plain["final"]["accuracy"], abs=0.02)
    assert "the aggregator sees only ciphertexts" in encrypted["final"]["claim"]
    assert encrypted["final"]["claim"].startswith("No differential privacy")
    # One ciphertext per client for the 62 parameters of the logistic model: far above 4 × 62.
    assert plain["final"]["bytes_per_client"] == 4 * 62
    assert encrypted["final"]["bytes_per_client"] > 20 * 4 * 62


def test_dp_with_bfv_records_zcdp_events():
    config = {
        **BASE,
        "privacy": {"noise_multiplier": 2.0, "clip_norm": 0.1, "accountant": "rdp"},
        "encryption": {"scheme": "bfv", "value_bits": 24, "min_clients": 3},
    }
    metrics = run_experiment(parse_config(config))
    assert metrics["final"]["epsilon"] > 0
    assert "counted for 3 clients" in metrics["final"]["claim"]


@pytest.mark.parametrize(
    ("encryption", "privacy", "message"),
    [
        ({"scheme": "bfv"}, None, "encryption.clip_norm is needed"),
        ({"scheme": "bfv", "clip_norm": 1.0, "min_clients": 9}, None, "min_clients must be ≤ 4"),
        (
            {"scheme": "ckks"},
            {"noise_multiplier": 1.0, "accountant": "rdp"},
            "cannot carry DP noise",
        ),
        ({"scheme": "bfv"}, {"noise_multiplier": 1.0}, "set privacy.accountant: rdp"),
        (
            {"scheme": "bfv", "value_bits": 6},
            {"noise_multiplier": 1.0, "accountant": "rdp"},
            "leave no room for noise",
        ),
    ],
)
def test_bad_encryption_configs(encryption, privacy, message):
    config = {**BASE, "encryption": encryption}
    if privacy:
        config["privacy"] = privacy
    with pytest.raises(ConfigError, match=message):
        build_experiment(parse_config(config))


def test_one_secure_aggregation_method_at_a_time():
    with pytest.raises(ConfigError, match="choose one of secure_aggregation and encryption"):
        parse_config({**BASE, "secure_aggregation": {"clip_norm": 1.0}})
