import json

import pytest
import torch
from torch import nn

from veil.attacks.model_inversion import invert_class, run_model_inversion
from veil.errors import ConfigError
from veil.models import FunctionalModel

pytestmark = pytest.mark.filterwarnings("ignore::veil.randomness.InsecureNoiseWarning")


def _template_model() -> tuple[FunctionalModel, dict[str, torch.Tensor]]:
    """Logistic regression whose class c responds to the pixels of template c: a bright left
    half (class 0) or a bright right half (class 1)."""
    templates = torch.zeros(2, 1, 4, 4)
    templates[0, :, :, :2] = 1.0
    templates[1, :, :, 2:] = 1.0
    weight = (2 * templates - 1).flatten(1) * 3.0
    network = FunctionalModel(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)))
    return network, {"1.weight": weight, "1.bias": torch.zeros(2)}


def test_invert_class_recovers_the_template_each_class_responds_to():
    network, params = _template_model()
    for label in (0, 1):
        image = invert_class(network, params, label, (1, 4, 4), steps=200, lr=0.5)
        assert image.shape == (1, 4, 4)
        bright = image[..., :2] if label == 0 else image[..., 2:]
        dark = image[..., 2:] if label == 0 else image[..., :2]
        assert float(bright.mean()) > 0.5 > float(dark.mean())
        assert float(image.min()) >= 0 and float(image.max()) <= 1


def test_invert_class_priors_and_errors():
    network, params = _template_model()
    smooth = invert_class(network, params, 0, (1, 4, 4), steps=50, tv_weight=0.1, l2_weight=0.1)
    assert float(smooth.max()) <= 1
    with pytest.raises(ConfigError, match=r"label must be in 0..1 \(got 2\)"):
        invert_class(network, params, 2, (1, 4, 4))
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        invert_class(network, params, 0, (1, 4, 4), steps=0)
    with pytest.raises(ConfigError, match="lr must be > 0"):
        invert_class(network, params, 0, (1, 4, 4), lr=0.0)
    with pytest.raises(ConfigError, match="tv_weight and l2_weight must be >= 0"):
        invert_class(network, params, 0, (1, 4, 4), l2_weight=-1.0)
    with pytest.raises(ConfigError, match="total-variation prior needs images"):
        invert_class(network, params, 0, (16,), tv_weight=0.1)
    with pytest.raises(ConfigError, match=r"bounds must be \(low, high\)"):
        invert_class(network, params, 0, (1, 4, 4), bounds=(1.0, 1.0))


@pytest.fixture(scope="module")
def digits_run():
    return run_model_inversion(epsilon=0.5, epochs=10, steps=100, noise_seed_for_testing=0)


def test_inversion_resembles_class_means_and_dp_blurs_it(digits_run):
    plain, private = digits_run.inverted
    assert plain.epsilon is None and private.epsilon == pytest.approx(0.5, rel=0.05)
    assert private.noise_multiplier > 1
    plain_scores, private_scores = plain.summary(), private.summary()
    # Without DP: each reconstruction looks like its own class, not the others.
    assert plain_scores["ssim_to_class_mean"] > plain_scores["ssim_to_other_means"] + 0.25
    assert plain_scores["identified"] >= 0.8 and plain_scores["classified"] == 1.0
    # With DP-SGD at ε = 0.5 the resemblance falls clearly.
    assert private_scores["ssim_to_class_mean"] < plain_scores["ssim_to_class_mean"] - 0.1
    assert private_scores["mse_to_class_mean"] > plain_scores["mse_to_class_mean"]
    assert private_scores["test_accuracy"] < plain_scores["test_accuracy"]


def test_model_inversion_result_is_json_and_a_report_section(digits_run):
    document = digits_run.to_json()
    assert json.loads(json.dumps(document, allow_nan=False)) == document
    assert list(document["models"]) == ["no DP", digits_run.inverted[1].name]
    assert len(document["models"]["no DP"]["classes"]) == 10
    html = digits_run.report_section().html
    assert html.count("<svg") == 1
    assert "class mean" in html and "DP-SGD ε=" in html


def test_run_model_inversion_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="dataset must hold images"):
        run_model_inversion("breast_cancer")
    with pytest.raises(ConfigError, match="epsilon must be > 0"):
        run_model_inversion(epsilon=0.0)
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        run_model_inversion(epochs=0)
    with pytest.raises(ConfigError, match="learning_rate must be > 0"):
        run_model_inversion(learning_rate=0.0)
    with pytest.raises(ConfigError, match=r"batch_size must be in \[1, "):
        run_model_inversion(batch_size=0)
