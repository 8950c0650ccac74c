"""`veil attack`, `veil audit`, `veil tradeoff`: JSON out, results in the attacked run's report,
one clear line and exit 2 on bad input."""

import json

import pytest
from typer.testing import CliRunner

from veil.cli import app

runner = CliRunner()

SMALL = "name: small\nfederation: {rounds: 2}\n"
PRIVATE = SMALL + "privacy: {target_epsilon: 4.0, clip_norm: 0.1}\n"


def config_file(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_poisoning_attack_lands_in_the_report_of_the_run_it_attacked(tmp_path):
    out = tmp_path / "run"
    config = config_file(tmp_path, SMALL)
    assert runner.invoke(app, ["run", config, "--out", str(out)]).exit_code == 0
    first_metrics = (out / "metrics.json").read_text()
    result = runner.invoke(app, ["attack", "poisoning", config, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [r["attack"] for r in document["results"]][:2] == ["none", "label_flip"]
    assert (out / "metrics.json").read_text() == first_metrics  # the run was not re-made
    assert "Poisoning attacks and robust aggregation" in (out / "report.html").read_text()


def test_audit_runs_the_config_first_when_the_folder_holds_another_run(tmp_path):
    out = tmp_path / "run"
    config = config_file(tmp_path, PRIVATE)
    result = runner.invoke(app, ["audit", config, "--out", str(out), "--runs", "20000", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    metrics = json.loads((out / "metrics.json").read_text())
    assert document["claimed_epsilon"] == pytest.approx(metrics["final"]["epsilon"], rel=1e-6)
    assert 0 <= document["empirical_epsilon_lower_bound"] <= document["claimed_epsilon"]
    assert document["num_runs"] == 20000
    assert "Privacy audit" in (out / "report.html").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["attack", "teleport", "{config}"], "unknown attack 'teleport'; choose one of"),
        (["attack", "membership", "{missing}"], "config file not found"),
        (["audit", "{config}"], "privacy"),
        (["attack", "model-inversion", "{config}"], "dataset must hold images"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    paths = {"config": config_file(tmp_path, SMALL), "missing": str(tmp_path / "nope.yaml")}
    argv = [a.format(**paths) for a in args] + ["--out", str(tmp_path / "run")]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_membership_and_fairness_attach_to_the_run(tmp_path):
    out = tmp_path / "run"
    config = config_file(tmp_path, SMALL)
    result = runner.invoke(app, ["attack", "membership", config, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    attacks = json.loads(result.stdout)["attacks"]
    assert {"loss", "lira", "rmia"} <= set(attacks)
    assert all(0.0 <= a["auc"] <= 1.0 for a in attacks.values())
    result = runner.invoke(app, ["fairness", config, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = (out / "report.html").read_text()
    assert "Membership" in report and "airness" in report


def test_tradeoff_writes_its_tables(tmp_path):
    config = config_file(tmp_path, SMALL)
    result = runner.invoke(app, ["tradeoff", config, "--out", str(tmp_path / "t"), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [r["setting"] for r in rows][:2] == ["none", "DP ε=1"]
    assert set(rows[0]) >= {
        "setting", "accuracy", "epsilon", "mia_auc", "reconstruction_psnr", "seconds",
        "bytes_per_client",
    }  # fmt: skip
    assert rows[0]["epsilon"] is None
    assert (tmp_path / "t" / "tradeoff.md").exists() and (tmp_path / "t" / "tradeoff.html").exists()


def test_attack_options_follow_the_config():
    from veil.cli_audits import dp_options, model_options
    from veil.config import load_config
    from veil.experiment import build_experiment

    config = load_config("examples/hospitals.yaml")
    options = dp_options(config)
    assert options["noise_multiplier"] == build_experiment(config).privacy.noise_multiplier
    assert (options["secagg_clients"], options["clip_norm"], options["delta"]) == (5, 0.1, 1e-5)
    assert dp_options(load_config("examples/hospitals_fedavg.yaml")) == {"secagg_clients": 5}
    assert model_options(config) == {"model": "mlp", "hidden": (128,), "activation": "relu"}
