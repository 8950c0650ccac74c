import functools
import json
import re
import warnings
from pathlib import Path

import pytest

from veil.attacks.poisoning_experiment import (
    PoisoningGrid,
    PoisoningResult,
    run_poisoning,
    run_poisoning_grid,
    run_poisoning_on_config,
)
from veil.config import RunConfig, parse_config
from veil.errors import ConfigError
from veil.randomness import InsecureNoiseWarning

DOC = Path(__file__).resolve().parents[2] / "docs" / "robust-aggregation.md"

# Ten digits clients, an MLP, 20 rounds of FedAvg: about 0.92 test accuracy when nobody attacks.
DIGITS = {
    "data": {"dataset": "digits"},
    "partition": {"num_clients": 10},
    "model": {"name": "mlp", "hidden": [64]},
    "federation": {"rounds": 20},
    "client": {"lr": 0.3, "batch_size": 32, "local_epochs": 1},
    "runtime": {"threads": 1},
}
DEFENCES = {
    "krum": {"num_byzantine": 2},
    "multi_krum": {"num_byzantine": 2, "num_selected": 6},
    "median": {},
    "trimmed_mean": {"trim_fraction": 0.2},
    "norm_bounding": {"max_norm": 0.5},
}


def digits_config(**sections) -> RunConfig:
    return parse_config({**DIGITS, **sections})


@functools.cache
def run(attack: str, num_malicious: int, robust: str | None = None) -> PoisoningResult:
    return run_poisoning(
        digits_config(),
        attack=attack,
        num_malicious=num_malicious,
        robust=robust,
        robust_params=DEFENCES.get(robust),
    )


def test_a_clean_run_learns_and_has_no_backdoor():
    result = run("none", 0)
    assert result.accuracy >= 0.85 and result.attack_success_rate <= 0.1
    assert result.malicious == () and result.defence == "none" and result.rounds == 20


def test_model_replacement_backdoors_plain_fedavg():
    result = run("model_replacement", 1)
    assert result.attack_success_rate >= 0.6 and len(result.malicious) == 1


@pytest.mark.parametrize("robust", ["krum", "median", "trimmed_mean", "norm_bounding"])
def test_robust_aggregators_stop_model_replacement(robust):
    result = run("model_replacement", 1, robust)
    assert result.attack_success_rate <= 0.2 and result.accuracy >= 0.8
    assert result.defence == robust and result.defence_params == DEFENCES[robust]


def test_a_backdoor_without_boosting_still_works_and_the_median_stops_it():
    assert run("backdoor", 1).attack_success_rate >= 0.25
    assert run("backdoor", 1, "median").attack_success_rate <= 0.15


def test_sign_flipping_wrecks_fedavg_but_not_the_median():
    undefended, defended = run("sign_flip", 2), run("sign_flip", 2, "median")
    assert undefended.accuracy <= 0.3 and undefended.attack_success_rate is None
    assert defended.accuracy >= 0.8


def test_boosted_label_flipping_and_the_trimmed_mean():
    undefended, defended = run("scale", 1), run("scale", 1, "trimmed_mean")
    assert undefended.accuracy <= 0.7 and undefended.attack_success_rate >= 0.2
    assert defended.accuracy >= 0.85 and defended.attack_success_rate <= 0.1


def test_norm_bounding_composes_with_secagg_and_krum_is_refused():
    # 10 rounds (SecAgg+ costs ~0.1 s a round); a quantization clip that bounds nothing
    config = digits_config(federation={"rounds": 10}, secure_aggregation={"clip_norm": 100.0})
    undefended = run_poisoning(config, attack="model_replacement", num_malicious=1)
    defended = run_poisoning(
        config,
        attack="model_replacement",
        num_malicious=1,
        robust="norm_bounding",
        robust_params={"max_norm": 0.5},
    )
    assert undefended.attack_success_rate >= 0.6 and defended.attack_success_rate <= 0.2
    with pytest.raises(ConfigError, match=r"krum needs each client's update in the clear.*SecAgg"):
        run_poisoning(
            config,
            attack="sign_flip",
            num_malicious=1,
            robust="krum",
            robust_params={"num_byzantine": 1},
        )


def test_he_refuses_the_median_before_generating_keys():
    config = digits_config(encryption={"scheme": "paillier", "clip_norm": 1.0})
    with pytest.raises(ConfigError, match=r"median needs .* an encrypted \(HE\) sum"):
        run_poisoning(config, attack="sign_flip", num_malicious=1, robust="median")


def test_dp_fedavg_defends_and_refuses_a_robust_aggregator_in_its_place():
    privacy = {"noise_multiplier": 0.3, "clip_norm": 0.5, "noise_seed_for_testing": 0}
    config = digits_config(federation={"rounds": 10}, privacy=privacy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        result = run_poisoning(config, attack="model_replacement", num_malicious=1)
    assert result.attack_success_rate <= 0.2
    with pytest.raises(ConfigError, match="client-level DP calibrates its noise"):
        run_poisoning(config, attack="sign_flip", num_malicious=1, robust="median")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attack": "gradient_ascent", "num_malicious": 1}, "attack must be one of"),
        ({"attack": "none", "num_malicious": 1}, "attack 'none' needs num_malicious = 0"),
        ({"attack": "backdoor", "num_malicious": 0}, r"needs num_malicious >= 1 \(got 0\)"),
        ({"attack": "backdoor", "num_malicious": 10}, r"must be < the 10 clients \(got 10\)"),
        (
            {"attack": "sign_flip", "num_malicious": 1, "robust": "krum",
             "robust_params": {"num_byzantine": 4}},
            r"more than 2f \+ 2 = 10 clients per round \(got 10\)",
        ),
        (
            {"attack": "sign_flip", "num_malicious": 1, "robust": "krum", "robust_params": {}},
            "method 'krum' needs num_byzantine",
        ),
    ],
)  # fmt: skip
def test_run_poisoning_refuses_bad_input(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        run_poisoning(digits_config(), **kwargs)


def test_grid_table_json_and_report_section():
    config = digits_config(federation={"rounds": 3})
    grid = run_poisoning_grid(
        config,
        ["none", "model_replacement"],
        [None, "krum"],
        num_malicious=1,
        robust_params={"krum": {"num_byzantine": 1}},
    )
    assert isinstance(grid, PoisoningGrid)
    pairs = [(r.attack, r.defence_label, len(r.malicious)) for r in grid.results]
    assert pairs == [
        ("none", "none", 0),
        ("none", "krum (num_byzantine=1)", 0),
        ("model_replacement", "none", 1),
        ("model_replacement", "krum (num_byzantine=1)", 1),
    ]
    loaded = json.loads(json.dumps(grid.to_json()))
    assert [r["defence_params"] for r in loaded["results"]] == [{}, {"num_byzantine": 1}] * 2
    section = grid.report_section()
    assert section.title == "Poisoning attacks and robust aggregation"
    assert section.html.count("<tr><td>") == 4 and "<svg" in section.html
    assert "krum (num_byzantine=1)" in section.html


def test_the_docs_example_runs_and_prints_what_it_says(capsys):
    example = DOC.read_text(encoding="utf-8").split("## Example", 1)[1]
    block = re.search(r"```python\n(.*?)```", example, flags=re.S).group(1)
    exec(compile(block, str(DOC), "exec"), {})
    rates = re.findall(
        r"^(.*): accuracy [\d.]+, backdoor success ([\d.]+)$", capsys.readouterr().out, re.M
    )
    assert [name for name, _ in rates] == ["none", "krum (num_byzantine=1)"]
    assert float(rates[0][1]) >= 0.6 and float(rates[1][1]) <= 0.2


@pytest.mark.slow
def test_the_documented_grid():
    """The grid of docs/robust-aggregation.md: FedAvg falls, every defence holds."""
    config = parse_config(
        {**DIGITS, "partition": {"num_clients": 20}, "federation": {"rounds": 30}}
    )
    defences = {**DEFENCES, "multi_krum": {"num_byzantine": 2, "num_selected": 16}}
    attacks = ["none", "label_flip", "backdoor", "sign_flip", "scale", "model_replacement"]
    grid = run_poisoning_grid(
        config, attacks, [None, *defences], num_malicious=2, robust_params=defences
    )
    found = {(r.attack, r.defence): r for r in grid.results}
    assert found["backdoor", "none"].attack_success_rate >= 0.3
    assert found["model_replacement", "none"].attack_success_rate >= 0.6
    assert found["sign_flip", "none"].accuracy <= 0.3
    assert found["scale", "none"].accuracy <= 0.6
    for defence in defences:
        assert found["none", defence].accuracy >= 0.85
        assert found["backdoor", defence].attack_success_rate <= 0.2
        assert found["model_replacement", defence].attack_success_rate <= 0.2
        assert found["sign_flip", defence].accuracy >= 0.8
        assert found["scale", defence].accuracy >= 0.8


def test_run_poisoning_on_config_attacks_the_run_as_configured():
    config = parse_config(
        {"federation": {"rounds": 3}, "aggregation": {"robust": {"method": "median"}}}
    )
    grid = run_poisoning_on_config(config, num_malicious=1)
    attacks = [r.attack for r in grid.results]
    assert attacks == ["none", "label_flip", "backdoor", "sign_flip", "scale", "model_replacement"]
    assert {r.defence for r in grid.results} == {"median"}
    assert all(len(r.malicious) == (0 if r.attack == "none" else 1) for r in grid.results)
    assert "median" in grid.report_section().html
