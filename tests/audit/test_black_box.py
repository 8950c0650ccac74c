import numpy as np
import pytest
import torch

from veil.audit.black_box import CANARY_FEATURE, audit_dpsgd_black_box, input_canary
from veil.audit.canary import run_audit
from veil.config import parse_config
from veil.errors import ConfigError
from veil.experiment import build_experiment
from veil.privacy.accounting import dpsgd_epsilon

pytestmark = pytest.mark.filterwarnings("ignore::veil.randomness.InsecureNoiseWarning")

RUNS = 1_000


def full_batch(noise_multiplier):
    """Twelve breast-cancer sites (about 38 rows each) training full-batch by DP-SGD: q = 1, one
    step per round."""
    return parse_config(
        {
            "partition": {"method": "iid", "num_clients": 12},
            "federation": {"rounds": 4},
            "client": {"batch_size": 256, "local_steps": 1, "lr": 0.5},
            "privacy": {
                "level": "sample",
                "noise_multiplier": noise_multiplier,
                "clip_norm": 0.1,
                "noise_seed_for_testing": 5,
            },
        }
    )


def test_input_canary_is_out_of_distribution_and_mislabelled():
    experiment = build_experiment(full_batch(1.0))
    x, label = input_canary(experiment)
    assert x.shape == experiment.data.feature_shape
    assert (x == CANARY_FEATURE).all()
    logits = experiment.model.apply(experiment.state.params, torch.as_tensor(x[None]))
    assert label == int(logits.argmin())


def test_black_box_audit_finds_signal_without_noise_and_none_with_much():
    weak = audit_dpsgd_black_box(build_experiment(full_batch(0.2)), 0, num_runs=RUNS)
    strong = run_audit(full_batch(30.0), white_box=False, num_runs=RUNS)
    assert weak.threat_model == strong.threat_model == "black-box input canary"
    assert weak.claimed_epsilon == pytest.approx(dpsgd_epsilon(0.2, 1.0, 4, 1e-5))
    assert weak.num_runs == RUNS and weak.settings["steps"] == 4
    assert weak.bound.epsilon > 3  # σ = 0.2: the canary's loss drop shows in nearly every run
    assert strong.bound.epsilon < 0.5  # σ = 30: ε ≈ 0.2 claimed
    for result in (weak, strong):
        assert 0 <= result.bound.epsilon <= result.claimed_epsilon
    assert np.median(weak.scores_in) > np.median(weak.scores_out)


def test_black_box_audit_refuses_too_few_runs():
    with pytest.raises(ConfigError, match="num_runs must be an integer >= 8"):
        audit_dpsgd_black_box(build_experiment(full_batch(1.0)), 0, num_runs=6)
