from pathlib import Path

import pytest

from veil.config import RunConfig, load_config, parse_config
from veil.errors import ConfigError


def test_defaults_and_example_parse(tmp_path):
    assert parse_config(None) == RunConfig()
    config = load_config(Path(__file__).parents[1] / "examples" / "hospitals.yaml")
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
        ({"bogus": 1}, r"bogus: unknown key \(valid keys here: name, task, seed, data"),
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
        (
            {"partition": {"alpha": 0.5}},
            r"alpha applies only to method dirichlet \(got method 'iid'\)",
        ),
        ({"server": {"momentum": 0.5}}, r"momentum applies only to optimizer fedavgm"),
        (
            {"server": {"optimizer": "fedavgm", "tau": 0.1}},
            r"tau applies only to optimizer fedadam or fedyogi",
        ),
        ({"seed": -1}, r"^seed: Input should be greater than or equal to 0 \(got -1\)$"),
        (
            {"runtime": {"threads": 10**5}},
            r"runtime.threads: Input should be less than or equal to",
        ),
        ({"data": {"test_fraction": 0}}, r"data.test_fraction: Input should be greater than 0"),
        (
            {"runtime": {"engine": "jax"}},
            r"runtime.engine: Input should be 'auto', 'lowrank', 'fused'",
        ),
    ],
)
def test_bad_configs_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_registries_define_the_choices():
    assert parse_config({"runtime": {"engine": "lowrank"}}).runtime.engine == "lowrank"
    config = parse_config({"server": {"optimizer": "fedadam", "beta1": 0.5, "lr": 0.1}})
    assert config.server.hyperparameters() == {"lr": 0.1, "beta1": 0.5}


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
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"binary\.yaml: cannot read the config as UTF-8 text"):
        load_config(binary)
