import json

import pytest
import torch

from veil.config import parse_config
from veil.experiment import build_local_training, build_plan, build_sampler, run_experiment
from veil.fl import FixedCountSampler, FractionSampler, PoissonSampler

SMALL = {
    "data": {"dataset": "digits"},
    "partition": {"method": "shards", "num_clients": 10, "shards_per_client": 2},
    "model": {"name": "mlp", "hidden": [32]},
    "federation": {"rounds": 3, "fraction": 0.5},
    "client": {"local_steps": 5, "batch_size": 16, "lr": 0.1},
}


def test_metrics_schema_and_files(tmp_path):
    metrics = run_experiment(parse_config(SMALL), tmp_path)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["final"]["claim"] == metrics["final"]["claim"]
    assert [r["round"] for r in on_disk["rounds"]] == [1, 2, 3]
    for record in on_disk["rounds"]:
        assert {"round", "accuracy", "loss", "epsilon", "seconds"} <= record.keys()
        assert record["epsilon"] is None and record["clients"] == 5
    assert {"accuracy", "loss", "epsilon", "delta", "claim"} <= on_disk["final"].keys()
    assert on_disk["config"]["partition"]["method"] == "shards"
    assert len(on_disk["clients"]) == 10
    assert "<svg" in (tmp_path / "report.html").read_text()


def test_metrics_are_written_after_every_round(tmp_path):
    seen = []

    def on_round(record):
        seen.append(json.loads((tmp_path / "metrics.json").read_text()))
        if record["round"] == 2:
            raise KeyboardInterrupt  # a crash mid-run

    with pytest.raises(KeyboardInterrupt):
        run_experiment(parse_config(SMALL), tmp_path, on_round=on_round)
    survivor = json.loads((tmp_path / "metrics.json").read_text())
    assert len(survivor["rounds"]) == 2 and survivor["final"] is None
    assert [len(s["rounds"]) for s in seen] == [1, 2]


def test_same_seed_same_model_metrics():
    config = parse_config(SMALL)
    a, b = run_experiment(config), run_experiment(config)
    assert [r["loss"] for r in a["rounds"]] == [r["loss"] for r in b["rounds"]]


def test_builders_follow_the_config():
    assert build_sampler(parse_config({"partition": {"num_clients": 4}})) == FixedCountSampler(4)
    assert build_sampler(parse_config({"federation": {"fraction": 0.5}})) == FractionSampler(0.5)
    assert build_sampler(parse_config({"federation": {"poisson_rate": 0.2}})) == PoissonSampler(0.2)
    assert build_local_training(parse_config({})).epochs == 1
    local = build_local_training(
        parse_config({"client": {"local_steps": 3, "prox_mu": 0.2, "lr": 0.3}})
    )
    assert (local.steps, local.epochs, local.prox_mu, local.lr) == (3, None, 0.2, 0.3)


def test_server_hyperparameters_reach_the_optimizer():
    plan = build_plan(
        parse_config({"server": {"optimizer": "fedavgm", "momentum": 0.5, "lr": 2.0}})
    )
    opt = plan.server_optimizer
    params, state = opt.update(
        {"w": torch.zeros(1)}, {"w": torch.ones(1)}, opt.init({"w": torch.zeros(1)})
    )
    params, _ = opt.update(params, {"w": torch.ones(1)}, state)
    assert params["w"].item() == 2.0 + 2.0 * 1.5  # m = 1, then 0.5·1 + 1


def test_threads_are_restored_after_a_run():
    before = torch.get_num_threads()
    run_experiment(parse_config({**SMALL, "federation": {"rounds": 1}, "runtime": {"threads": 1}}))
    assert torch.get_num_threads() == before


def test_private_runs_withhold_what_the_guarantee_does_not_cover(tmp_path):
    config = parse_config(
        {
            **SMALL,
            "federation": {"rounds": 2, "poisson_rate": 0.5},
            "privacy": {"noise_multiplier": 1.0, "clip_norm": 1.0},
        }
    )
    assert (
        build_plan(config).secret_sampling and not build_plan(parse_config(SMALL)).secret_sampling
    )
    metrics = run_experiment(config, tmp_path)
    for record in metrics["rounds"]:
        assert record["clients"] is None and record["train_loss"] is None
    assert metrics["clients"] == []
