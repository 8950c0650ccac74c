"""The trade-off grid: settings derived from a base config, the tables, a measured row."""

import math

import pytest

from veil.config import load_config, parse_config
from veil.errors import ConfigError

tradeoff = pytest.importorskip("veil.audit.tradeoff")

HOSPITALS = "src/veil/examples/hospitals.yaml"


def test_grid_of_the_hospitals_example():
    base = load_config(HOSPITALS)
    settings = tradeoff.tradeoff_settings(base)
    names = [s.name for s in settings]
    assert names == [
        "none",
        "DP ε=1",
        "DP ε=3",
        "DP ε=8",
        "SecAgg+",
        "HE",
        "DP ε=8 + SecAgg+",
        "DP ε=8 + HE",
    ]
    by_name = {s.name: s.config for s in settings}
    assert by_name["none"].privacy is None and by_name["none"].secure_aggregation is None
    assert by_name["DP ε=3"].privacy.target_epsilon == 3
    assert by_name["DP ε=3"].privacy.clip_norm == base.privacy.clip_norm
    assert by_name["SecAgg+"].secure_aggregation.clip_norm == base.privacy.clip_norm
    assert by_name["HE"].encryption.scheme == "bfv"
    assert by_name["DP ε=8 + HE"].privacy.accountant == "rdp"
    for config in by_name.values():  # everything else stays as in the base config
        assert config.model == base.model and config.partition == base.partition


def test_grid_without_privacy_uses_defaults_and_the_largest_epsilon():
    settings = tradeoff.tradeoff_settings(parse_config({}), epsilons=(0.5, 2.0))
    names = [s.name for s in settings]
    assert names[1:3] == ["DP ε=0.5", "DP ε=2"] and "DP ε=2 + SecAgg+" in names
    assert settings[1].config.privacy.clip_norm == 0.1


def test_bad_grids_are_refused():
    with pytest.raises(ConfigError, match="needs task federated_training"):
        tradeoff.tradeoff_settings(load_config("src/veil/examples/keyboard_ldp.yaml"))
    with pytest.raises(ConfigError, match="epsilons must be positive"):
        tradeoff.tradeoff_settings(parse_config({}), epsilons=(0.0,))


def test_tables_show_every_row_and_missing_values():
    rows = [
        {
            "setting": "none",
            "accuracy": 0.9,
            "epsilon": None,
            "mia_auc": 0.61,
            "reconstruction_psnr": math.inf,
            "seconds": 1.234,
            "bytes_per_client": 248.0,
        },
        {
            "setting": "<b>x</b>",
            "accuracy": 0.8,
            "epsilon": 1.0,
            "mia_auc": 0.5,
            "reconstruction_psnr": 9.87,
            "seconds": 2.0,
            "bytes_per_client": 61810.0,
        },
    ]
    markdown = tradeoff.markdown_table(rows)
    assert "| none | 0.900 | — | 0.610 | ∞ | 1.23 | 248 |" in markdown
    assert "61,810" in markdown
    html = tradeoff.html_table(rows)
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>" not in html


def test_measured_rows_show_what_each_protection_hides(tmp_path):
    base = parse_config({"federation": {"rounds": 2}, "privacy": {"target_epsilon": 4.0}})
    result = tradeoff.run_tradeoff(base, epsilons=(4.0,), attack_steps=300)
    rows = {row["setting"]: row for row in result["rows"]}
    assert set(rows) == {"none", "DP ε=4", "SecAgg+", "HE", "DP ε=4 + SecAgg+", "DP ε=4 + HE"}
    assert rows["none"]["epsilon"] is None
    assert rows["DP ε=4"]["epsilon"] == pytest.approx(4.0, rel=0.01)
    for row in rows.values():
        assert 0.0 <= row["mia_auc"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0
        assert row["seconds"] > 0
    for name in ("none", "SecAgg+", "HE"):  # no noise: the same training, well above chance
        assert rows[name]["accuracy"] > 0.8, name
    # A logistic model's single-row gradient gives the row away to whoever sees the update
    # (also under central DP: the server adds the noise after it sees the clipped update) ...
    assert rows["none"]["reconstruction_psnr"] > 40
    assert rows["DP ε=4"]["reconstruction_psnr"] > 40
    # ... but not the sum of five clients' updates that SecAgg+ and HE reveal.
    for name in ("SecAgg+", "HE", "DP ε=4 + SecAgg+", "DP ε=4 + HE"):
        assert rows[name]["reconstruction_psnr"] < 30, name
    # SecAgg+ and HE hide updates, not the model: their rows attack the same run, once.
    assert rows["SecAgg+"]["mia_auc"] == rows["HE"]["mia_auc"] == rows["none"]["mia_auc"]
    assert rows["DP ε=4 + SecAgg+"]["mia_auc"] == rows["DP ε=4 + HE"]["mia_auc"]
    assert rows["none"]["bytes_per_client"] == 4 * 62
    assert rows["SecAgg+"]["bytes_per_client"] > rows["none"]["bytes_per_client"]
    assert rows["HE"]["bytes_per_client"] > rows["SecAgg+"]["bytes_per_client"]
    tradeoff.write_tradeoff(result, tmp_path)
    assert "| DP ε=4 + HE |" in (tmp_path / "tradeoff.md").read_text()
    assert "DP ε=4 + HE" in (tmp_path / "tradeoff.html").read_text()
    assert (tmp_path / "tradeoff.json").exists()


@pytest.mark.slow  # the whole grid on the default example: about a minute
def test_hospitals_example_is_attackable_without_dp_and_not_at_epsilon_1():
    result = tradeoff.run_tradeoff(load_config(HOSPITALS))
    rows = {row["setting"]: row for row in result["rows"]}
    assert rows["none"]["mia_auc"] > 0.55
    assert rows["DP ε=1"]["mia_auc"] <= 0.55
    assert rows["none"]["reconstruction_psnr"] > 40 and rows["SecAgg+"]["reconstruction_psnr"] < 30
