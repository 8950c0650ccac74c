"""`veil epsilon`, `veil calibrate` and `veil ledger show`: the contract in DESIGN.md."""

import json

import dp_accounting
import pytest
from typer.testing import CliRunner

from veil.cli import app
from veil.privacy.accounting import dpsgd_epsilon
from veil.privacy.ledger import LedgerSettings, PrivacyLedger

runner = CliRunner()
CASE = ["--noise-multiplier", "1.1", "--sample-rate", "0.01", "--steps", "1000", "--delta", "1e-5"]


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_epsilon_json(accountant):
    result = runner.invoke(app, ["epsilon", *CASE, "--accountant", accountant, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["accountant"] == accountant
    assert out["epsilon"] == pytest.approx(dpsgd_epsilon(1.1, 0.01, 1000, 1e-5, accountant))


def test_calibrate_json_hits_the_target_from_below():
    args = ["calibrate", "--target-epsilon", "2", *CASE[2:], "--json"]
    out = json.loads(runner.invoke(app, args).stdout)
    assert out["epsilon"] <= 2 and out["noise_multiplier"] > 0
    assert dpsgd_epsilon(out["noise_multiplier"] * 0.99, 0.01, 1000, 1e-5) > 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--noise-multiplier", "0", *CASE[2:]], "noise multiplier must be > 0"),
        ([*CASE[:2], "--sample-rate", "1.5", *CASE[4:]], r"sample rate must be in (0, 1]"),
        ([*CASE[:4], "--steps", "0", *CASE[6:]], "steps must be an integer >= 1"),
        ([*CASE[:6], "--delta", "1"], "delta must be in (0, 1)"),
        ([*CASE, "--accountant", "moments"], "accountant must be one of"),
    ],
)
def test_epsilon_bad_input_is_one_line_exit_2(args, message):
    result = runner.invoke(app, ["epsilon", *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_ledger_show(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = PrivacyLedger.open(path, LedgerSettings(delta=1e-5, budget_epsilon=5.0))
    ledger.record(1, [dp_accounting.GaussianDpEvent(2.0)])
    out = json.loads(runner.invoke(app, ["ledger", "show", str(path), "--json"]).stdout)
    row = out["subjects"][0]
    assert row["subject"] == "dataset" and row["releases"] == 1
    assert row["remaining_epsilon"] == pytest.approx(5.0 - row["epsilon"])
    text = runner.invoke(app, ["ledger", "show", str(path)])
    assert text.exit_code == 0 and "dataset" in text.stdout
    missing = runner.invoke(app, ["ledger", "show", str(tmp_path / "none.jsonl")])
    assert missing.exit_code == 2 and "cannot read ledger" in missing.stderr
