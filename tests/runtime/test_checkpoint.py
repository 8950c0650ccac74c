import json

import dp_accounting
import pytest
import torch

from veil.config import parse_config
from veil.errors import ConfigError
from veil.fl.round import ServerState
from veil.privacy.ledger import LedgerSettings, PrivacyLedger
from veil.runtime.checkpoint import Checkpoint, CheckpointStore, config_digest


def state(round_index: int, value: float = 1.0) -> ServerState:
    params = {"w": torch.full((2, 3), value), "b": torch.arange(2.0)}
    adam = ({k: v * 0.5 for k, v in params.items()}, {k: v * 0.25 for k, v in params.items()})
    return ServerState(params, adam, (None, None), (0.7, round_index), round_index)


def ledger_with(tmp_path, releases: int) -> PrivacyLedger:
    ledger = PrivacyLedger.open(tmp_path / "ledger.jsonl", LedgerSettings(delta=1e-5))
    for r in range(1, releases + 1):
        ledger.record(r, [dp_accounting.GaussianDpEvent(2.0)])
    return ledger


def test_save_and_load_round_trip_every_part_of_the_state(tmp_path):
    store = CheckpointStore(tmp_path, "digest")
    record = {"round": 3, "accuracy": 0.9, "loss": float("nan"), "epsilon": None}
    path = store.save(Checkpoint(state(3, 2.0), 3, [record], [123.0]))
    assert path.name == "round-000003.json"
    loaded = store.load(path)
    assert loaded.state.round_index == 3 and loaded.ledger_releases == 3
    assert torch.equal(loaded.state.params["w"], torch.full((2, 3), 2.0))
    assert torch.equal(loaded.state.optimizer_state[1]["b"], torch.arange(2.0) * 0.25)
    assert loaded.state.encoder_state == (None, None)
    assert loaded.state.aggregator_state == (0.7, 3)
    assert loaded.rounds[0]["accuracy"] == 0.9 and loaded.bytes_per_client == [123.0]
    assert json.loads(path.read_text())["round"] == 3  # the header is readable without torch


def test_resume_without_checkpoints_starts_from_scratch(tmp_path):
    assert CheckpointStore(tmp_path / "none", "d").resume(None) is None


def test_resume_takes_the_newest_committed_checkpoint(tmp_path):
    store = CheckpointStore(tmp_path / "c", "d")
    ledger = ledger_with(tmp_path, 2)
    store.save(Checkpoint(state(1), 1))
    store.save(Checkpoint(state(2), 2))
    assert store.resume(ledger).state.round_index == 2


def test_a_checkpoint_the_ledger_never_recorded_is_discarded(tmp_path):
    """Killed between writing round 3's checkpoint and its ledger entry: round 3 was never
    released, so it is dropped and runs again."""
    store = CheckpointStore(tmp_path / "c", "d")
    ledger = ledger_with(tmp_path, 2)
    store.save(Checkpoint(state(2), 2))
    pending = store.save(Checkpoint(state(3), 3))
    assert store.resume(ledger).state.round_index == 2
    assert not pending.exists()


def test_without_a_ledger_the_newest_checkpoint_is_committed(tmp_path):
    store = CheckpointStore(tmp_path, "d")
    store.save(Checkpoint(state(1)))
    store.save(Checkpoint(state(2)))
    assert store.resume(None).state.round_index == 2


@pytest.mark.parametrize("releases", [0, 4])
def test_a_ledger_out_of_step_with_the_checkpoints_is_refused(tmp_path, releases):
    store = CheckpointStore(tmp_path / "c", "d")
    store.save(Checkpoint(state(2), 2))
    with pytest.raises(ConfigError, match=r"holds \d releases but checkpoint .* expects 2"):
        store.resume(ledger_with(tmp_path, releases))


def test_a_checkpoint_of_another_config_is_refused(tmp_path):
    CheckpointStore(tmp_path, "one").save(Checkpoint(state(1)))
    with pytest.raises(ConfigError, match="belongs to a run with another config"):
        CheckpointStore(tmp_path, "other").resume(None)


@pytest.mark.parametrize(
    "content",
    [
        "{",
        '{"format": "other"}',
        '{"format": "veil-server-checkpoint/1", "state": "!!", "round": 1}',
    ],
)
def test_an_unreadable_checkpoint_is_refused(tmp_path, content):
    (tmp_path / "round-000001.json").write_text(content)
    with pytest.raises(ConfigError, match="is unreadable"):
        CheckpointStore(tmp_path, "d").resume(None)


def test_prune_keeps_the_given_round_and_later(tmp_path):
    store = CheckpointStore(tmp_path, "d")
    for r in (1, 2, 3):
        store.save(Checkpoint(state(r)))
    store.prune(keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-000002.json", "round-000003.json"]


def test_config_digest_ignores_the_deployment_section_only():
    base = parse_config({})
    deployed = parse_config({"deployment": {"address": "0.0.0.0:1"}})
    other = parse_config({"seed": 1})
    assert config_digest(base) == config_digest(deployed) != config_digest(other)
