"""The vertical fraud run: PSI, hetero LR against centralized LR, metrics.json and report."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from veil.config import VerticalConfig
from veil.errors import ConfigError
from veil.vertical_experiment import (
    claim,
    evaluate,
    run_vertical_training,
    sgd_logistic,
)

SMALL = VerticalConfig(
    num_shared=100, num_bank_only=30, num_partner_only=20, num_partner_signals=3,
    fraud_rate=0.1, epochs=2, batch_size=32,
)  # fmt: skip


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vertical")
    return run_vertical_training(SMALL, seed=1, name="tiny <vertical>", out_dir=out), out


def test_metrics_schema_and_files(small_run):
    metrics, out = small_run
    assert metrics["config"]["task"] == "vertical_training"
    assert metrics["config"]["name"] == "tiny <vertical>"
    assert metrics["config"]["vertical"]["key_bits"] == 3072
    assert [r["round"] for r in metrics["rounds"]] == [1, 2]
    for record in metrics["rounds"]:
        assert record["epsilon"] is None and record["seconds"] > 0
        assert {"accuracy", "auc", "loss"} <= set(record)
    final = metrics["final"]
    assert final["epsilon"] is None and final["delta"] is None
    assert final["accuracy"] == metrics["rounds"][-1]["accuracy"]
    assert final["training_seconds"] > 0 and final["bytes_exchanged"] > 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["final"]["claim"] == final["claim"]
    html = (out / "report.html").read_text()
    assert "Hetero LR against plaintext baselines" in html and "tiny &lt;vertical&gt;" in html


def test_psi_statistics(small_run):
    psi = small_run[0]["psi"]
    assert (psi["bank_customers"], psi["partner_customers"], psi["intersection"]) == (130, 120, 100)
    assert psi["seconds"] > 0 and psi["bytes_exchanged"] == 32 * 2 * (130 + 120)
    hetero = small_run[0]["hetero_lr"]
    assert hetero["train_rows"] + hetero["test_rows"] == 100
    assert (hetero["bank_features"], hetero["partner_features"]) == (7, 4)
    assert 0.5 <= hetero["majority_accuracy"] <= 1.0


def test_hetero_lr_equals_plaintext_taylor_sgd_and_is_close_to_centralized(small_run):
    metrics = small_run[0]
    assert metrics["final"]["max_weight_gap_to_plaintext_taylor"] < 1e-6
    taylor = metrics["baselines"]["centralized_taylor"]
    assert metrics["final"]["auc"] == pytest.approx(taylor["auc"], abs=1e-9)
    centralized = metrics["baselines"]["centralized"]
    assert abs(metrics["final"]["accuracy"] - centralized["accuracy"]) <= 0.02
    assert set(metrics["baselines"]) == {
        "centralized", "centralized_taylor", "centralized_sklearn", "bank_only",
    }  # fmt: skip


def test_claim_names_every_party_and_says_no_dp():
    sentence = claim(2048, 1234)
    assert "1234 customers they share (ECDH-PSI" in sentence
    assert "Paillier-2048" in sentence and "masked" in sentence
    assert sentence.endswith("the model is not differentially private.")


def test_evaluate_known_answer():
    scores = evaluate(np.array([2.0, -1.0, 0.5, -3.0]), np.array([1, 0, 0, 1]))
    assert scores["accuracy"] == 0.5
    assert scores["auc"] == 0.5
    expected = np.mean(np.log1p(np.exp(-np.array([2.0, 1.0, -0.5, -3.0]))))
    assert scores["loss"] == pytest.approx(expected)
    assert np.isnan(evaluate(np.zeros(2), np.array([0, 0]))["auc"])


def test_sgd_logistic_learns_a_separable_problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    y = (x[:, 0] - x[:, 1] > 0).astype(np.int64)
    for taylor in (False, True):
        w = sgd_logistic(
            x, y, epochs=5, batch_size=20, learning_rate=0.5, l2=0.0, seed=0, taylor=taylor
        )
        assert evaluate(x @ w[1:] + w[0], y)["accuracy"] > 0.95
        assert w[1] > 0 > w[2]


def test_default_config_is_the_example():
    text = resources.files("veil").joinpath("examples/fraud_vertical.yaml").read_text()
    data = yaml.safe_load(text)
    assert (data["name"], data["task"]) == ("fraud_vertical", "vertical_training")
    assert VerticalConfig(**data["vertical"]) == VerticalConfig()


def test_config_rejects_unknown_keys_and_bad_ranges():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        VerticalConfig(num_sharde=10)
    with pytest.raises(ValidationError, match="multiple of 256"):
        VerticalConfig(key_bits=1000)
    with pytest.raises(ValidationError, match="2048-bit Paillier modulus is below 128-bit"):
        VerticalConfig(key_bits=2048)
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        VerticalConfig(num_shared=1)


def test_run_needs_a_vertical_config():
    with pytest.raises(ConfigError, match=r"config must be a VerticalConfig \(got dict\)"):
        run_vertical_training({}, seed=0, name="x")  # type: ignore[arg-type]


def test_shared_customers_must_fall_on_both_sides_of_the_split():
    config = SMALL.model_copy(update={"num_shared": 2, "test_fraction": 0.01})
    with pytest.raises(ConfigError, match="must fall on both sides of the split"):
        run_vertical_training(config, seed=0, name="x")


@pytest.mark.slow
def test_default_example_is_within_one_point_of_centralized_lr(tmp_path):
    metrics = run_vertical_training(
        VerticalConfig(), seed=0, name="fraud_vertical", out_dir=tmp_path
    )
    final, centralized = metrics["final"], metrics["baselines"]["centralized"]
    assert abs(final["accuracy"] - centralized["accuracy"]) <= 0.01
    assert abs(final["auc"] - centralized["auc"]) <= 0.01
    assert metrics["psi"]["intersection"] == 1600


def test_the_federated_builder_refuses_a_vertical_config():
    from veil.config import load_config
    from veil.experiment import build_experiment

    config = load_config(Path(__file__).resolve().parents[1] / "examples" / "fraud_vertical.yaml")
    with pytest.raises(ConfigError, match="runs task federated_training"):
        build_experiment(config)
