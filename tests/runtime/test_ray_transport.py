"""Ray scale-out: the same rounds in Ray actors as in the in-process simulator."""

import warnings

import pytest
import torch

from veil.config import load_config, parse_config
from veil.errors import ConfigError
from veil.experiment import build_experiment, execute
from veil.randomness import InsecureNoiseWarning

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    """A local cluster of two worker slots, shared by this module's tests."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def on_ray(config: dict) -> dict:
    return {**config, "runtime": {**config.get("runtime", {}), "backend": "ray", "ray_workers": 2}}


@pytest.mark.slow  # a Ray cluster takes 15–30 s to start on 2 cores
def test_ray_rounds_equal_the_simulator(cluster):
    base = load_config("src/veil/examples/hospitals_fedavg.yaml").model_dump(mode="json")
    base["federation"]["rounds"] = 3
    plain = build_experiment(parse_config(base))
    remote = build_experiment(parse_config(on_ray(base)))
    execute(plain), execute(remote)
    for name, value in plain.state.params.items():
        torch.testing.assert_close(remote.state.params[name], value, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_sample_level_dp_on_ray_records_every_clients_event(cluster):
    config = {
        "federation": {"rounds": 2},
        "privacy": {"level": "sample", "noise_multiplier": 1.0, "noise_seed_for_testing": 3},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        plain = execute(build_experiment(parse_config(config)))
        remote = execute(build_experiment(parse_config(on_ray(config))))
    # the same accounting (every client's DP-SGD events reach the ledger), different noise draws
    assert remote["final"]["epsilon"] == pytest.approx(plain["final"]["epsilon"], rel=1e-9)


def test_ray_settings_need_the_ray_backend():
    with pytest.raises(ConfigError, match="ray_workers applies only to backend ray"):
        parse_config({"runtime": {"ray_workers": 2}})
    with pytest.raises(ConfigError, match=r"runtime\.ray_workers"):
        parse_config({"runtime": {"backend": "ray", "ray_workers": 0}})
