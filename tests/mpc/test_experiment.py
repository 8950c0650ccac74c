import json

import pytest

from veil.config import DataConfig
from veil.errors import ConfigError
from veil.mpc.config import MpcConfig
from veil.mpc.experiment import claim, prepare_parties, run_mpc_training


def test_rows_split_gives_each_hospital_its_own_patients():
    spec, data, (_, y, x_test, _) = prepare_parties(MpcConfig(parties=3), DataConfig(), 0)
    assert spec.row_counts == tuple(len(d.y_train) for d in data) and sum(spec.row_counts) == len(y)
    assert spec.feature_counts == (30, 30, 30) and len(x_test) == sum(spec.test_row_counts)


def test_features_split_gives_labels_to_hospital_zero_only():
    spec, data, (x, _, _, _) = prepare_parties(MpcConfig(split="features"), DataConfig(), 0)
    assert spec.feature_counts == (15, 15) and x.shape[1] == 30
    assert data[0].y_train is not None and data[1].y_train is None


def test_claims_say_who_learns_what():
    rows = claim(MpcConfig())
    assert "SecureML" in rows and "dealer that colludes with neither" in rows
    assert "pooled per-feature mean and standard deviation" in rows and "model's weights" in rows
    three = claim(MpcConfig(parties=3, split="features", release="predictions"))
    assert "ABY3" in three and "hospital 0 holds the labels" in three
    assert "only the predicted labels of their own test patients" in three
    assert "Paillier-3072" in claim(MpcConfig(triples="paillier"))


def test_a_short_run_writes_metrics_and_report(tmp_path):
    mpc = MpcConfig(epochs=1, transport="threads")
    metrics = run_mpc_training(mpc, DataConfig(), 0, "tiny", tmp_path)
    final = metrics["final"]
    assert final["accuracy"] > 0.9 and final["epsilon"] is None and "hospitals" in final["claim"]
    assert final["online_seconds"] > 0 and final["offline_bytes"] > 0 and final["bytes"] > 0
    assert {"matmul", "mul", "garbled_circuit", "ot_extension"} <= set(metrics["communication"])
    assert len(metrics["rounds"]) == 1 and metrics["plaintext"]["accuracy"] > 0.9
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["config"]["task"] == "mpc_training"
    page = (tmp_path / "report.html").read_text()
    assert "Communication per operation" in page and "Secure training against plaintext" in page


def test_non_binary_data_is_refused():
    with pytest.raises(ConfigError, match="needs a binary data set of flat features"):
        run_mpc_training(MpcConfig(epochs=1), DataConfig(dataset="digits"), 0, "x")
    with pytest.raises(ConfigError, match="needs an MpcConfig and a DataConfig"):
        run_mpc_training({}, DataConfig(), 0, "x")
