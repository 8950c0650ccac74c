import json

import pytest

from veil.config import parse_config
from veil.errors import ConfigError
from veil.experiment import run_experiment
from veil.privacy.ledger import PrivacyLedger

SMALL = {
    "task": "frequency_estimation",
    "frequency": {"num_phones": 20000, "vocab_size": 50, "epsilon": 4.0, "oracle": "oue"},
}


def test_keyboard_run_writes_metrics_report_and_ledger(tmp_path):
    metrics = run_experiment(parse_config(SMALL), tmp_path)
    result = metrics["frequency_estimation"]
    assert result["oracle"] == "oue" and result["num_phones"] == 20000
    assert result["linf_error"] < 6 * result["theoretical_std"]
    assert metrics["final"]["epsilon"] == pytest.approx(4.0, rel=0.01)
    assert "4-locally differentially private" in metrics["final"]["claim"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert len(saved["frequency_estimation"]["top_words"]) == 20
    assert "Word frequencies under local DP" in (tmp_path / "report.html").read_text()
    summary = PrivacyLedger.load(tmp_path / "privacy_ledger.jsonl").summary()
    assert summary["subjects"][0]["subject"] == "each phone"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"task": "frequency_estimation"}, "needs a frequency section"),
        ({"frequency": {}}, "a frequency section needs task: frequency_estimation"),
        ({**SMALL, "privacy": {"noise_multiplier": 1}}, "takes its ε in frequency.epsilon"),
        ({**SMALL, "frequency": {"oracle": "rappor2"}}, r"frequency.oracle: Input should be 'grr'"),
    ],
)
def test_bad_frequency_configs(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(data)
