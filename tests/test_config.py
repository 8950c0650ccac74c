import pytest

from veil.config import RunConfig, load_config, parse_config
from veil.errors import ConfigError


def test_defaults_and_example_parse(tmp_path):
    assert parse_config(None) == RunConfig()
    config = load_config("examples/hospitals.yaml")
    assert config.partition.method == "dirichlet" and config.partition.alpha == 0.5


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"federation": {"rounds": 0}},
            r"^federation.rounds: Input should be greater than or equal to 1 \(got 0\)$",
        ),
        ({"partition": {"method": "dirichlet"}}, r"partition: method 'dirichlet' needs alpha"),
        (
            {"partition": {"method": "dirichlet", "alpha": -1}},
            r"partition.alpha: .*greater than 0 \(got -1\)",
        ),
        ({"partition": {"method": "shards"}}, "needs shards_per_client"),
        (
            {"data": {"dataset": "cifar"}},
            r"data.dataset: Input should be 'breast_cancer'.*\(got 'cifar'\)",
        ),
        ({"client": {"lrr": 1}}, r"client.lrr: unknown key \(valid keys here: lr, batch_size"),
        ({"bogus": 1}, r"bogus: unknown key \(valid keys here: name, seed, data"),
        (
            {"client": {"local_steps": 1, "local_epochs": 1}},
            "only one of local_steps and local_epochs",
        ),
        (
            {"federation": {"fraction": 0.1, "poisson_rate": 0.1}},
            "set only one of clients_per_round",
        ),
        ({"federation": {"rounds": 0, "fraction": 2}}, r"\(and 1 more problem\(s\)\)"),
        ([1, 2], "must be a YAML mapping"),
    ],
)
def test_bad_configs_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("federation: {rounds: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML at line \d+, column \d+"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("federation:\n  rounds: -3\n")
    with pytest.raises(ConfigError, match=r"wrong.yaml: federation.rounds"):
        load_config(wrong)
