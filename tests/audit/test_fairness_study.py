import json

import pytest
from dp_accounting import dp_event

from veil.audit.fairness_study import (
    DEFAULT_ALPHA,
    DEFAULT_EPSILON,
    fairness_variants,
    run_fairness_study,
)
from veil.config import load_config, parse_config
from veil.errors import ConfigError
from veil.privacy.accounting import epsilon

pytestmark = pytest.mark.filterwarnings("ignore::veil.randomness.InsecureNoiseWarning")


def hospitals(**privacy):
    config = load_config("examples/hospitals.yaml")
    privacy = config.privacy.model_copy(update={"noise_seed_for_testing": 1, **privacy})
    return config.model_copy(update={"privacy": privacy})


def quick_hospitals():
    """hospitals.yaml for three rounds at a given σ, accounted by RDP: no calibration to wait
    for."""
    config = hospitals(target_epsilon=None, noise_multiplier=0.8, accountant="rdp")
    return config.model_copy(
        update={"federation": config.federation.model_copy(update={"rounds": 3})}
    )


def test_variants_cross_partition_and_privacy():
    config = hospitals()
    variants = dict(fairness_variants(config, seed=3))
    assert list(variants) == ["IID", "IID + DP", "non-IID", "non-IID + DP"]
    assert variants["IID"].partition.method == "iid" and variants["IID"].privacy is None
    assert variants["non-IID + DP"].partition.alpha == config.partition.alpha
    assert variants["non-IID + DP"].privacy == config.privacy
    assert {v.seed for v in variants.values()} == {3}
    assert {v.partition.num_clients for v in variants.values()} == {5}


def test_variants_default_to_dirichlet_half_and_client_dp_at_eight():
    variants = dict(fairness_variants(parse_config({})))
    assert variants["non-IID"].partition.alpha == DEFAULT_ALPHA
    private = variants["IID + DP"].privacy
    assert (private.level, private.target_epsilon) == ("client", DEFAULT_EPSILON)


def test_study_measures_every_site_and_class():
    result = run_fairness_study(quick_hospitals())
    assert [v.name for v in result.variants] == ["IID", "IID + DP", "non-IID", "non-IID + DP"]
    for variant in result.variants:
        assert (variant.epsilon is not None) == variant.private
        assert set(variant.site_accuracy) == {f"client_{i}" for i in range(5)}
        assert set(variant.class_accuracy) == {0, 1}
        accuracies = variant.class_accuracy.values()
        assert variant.worst_class_gap == pytest.approx(max(accuracies) - min(accuracies))
        assert 0 <= variant.equalized_odds_difference <= 1
        assert variant.accuracy > 0.8  # breast cancer is easy, even with client-level DP
    three_rounds = dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(0.8), 3)
    assert result.variants[1].epsilon == pytest.approx(epsilon(three_rounds, 1e-5, "rdp"))
    data = json.loads(json.dumps(result.to_json()))
    assert data["alpha"] == 0.5 and set(data["variants"][0]["class_accuracy"]) == {"0", "1"}
    section = result.report_section()
    assert section.html.count("<svg") == 1 and section.html.count("<tr>") == 5


def test_study_refuses_other_tasks():
    config = parse_config({"task": "frequency_estimation", "frequency": {"num_phones": 10}})
    with pytest.raises(ConfigError, match="trains task federated_training"):
        run_fairness_study(config)
