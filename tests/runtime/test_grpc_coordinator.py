"""Crash safety of the coordinator's round loop, in process (the simulator as its transport).

A kill is simulated by an exception no code catches (like SIGKILL, it skips every later write),
raised at the two points of the commit order: after the round's checkpoint but before its
ledger entry, and after the ledger entry but before anything is published.
"""

import json
import warnings

import pytest
import torch

from veil.config import parse_config
from veil.errors import ConfigError, ProtocolError
from veil.experiment import build_experiment, execute
from veil.privacy.ledger import PrivacyLedger, read_entries
from veil.randomness import InsecureNoiseWarning
from veil.runtime.grpc.coordinator import (
    HeldEvents,
    check_deployable,
    max_update_norm,
    min_updates,
    run_rounds,
    update_kind,
)

ROUNDS = 3
CONFIG = {
    "partition": {"method": "iid", "num_clients": 3},
    "federation": {"rounds": ROUNDS},
    "client": {"local_steps": 2, "batch_size": 16},
    "privacy": {
        "noise_multiplier": 1.0,
        "clip_norm": 0.5,
        "accountant": "rdp",
        "noise_seed_for_testing": 7,
    },
}


class Killed(BaseException):
    """The process died here."""


@pytest.fixture(autouse=True)
def _quiet_test_noise():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        yield


@pytest.fixture(autouse=True)
def _no_report(monkeypatch):
    """The HTML report is tested with `veil run` (and the slow deployment test)."""
    monkeypatch.setattr("veil.runtime.grpc.coordinator.write_report", lambda *args: None)


def experiment(**changes):
    return build_experiment(parse_config({**CONFIG, **changes}))


class CountingTransport:
    """The simulator, counting the rounds it trains."""

    def __init__(self, inner):
        self.inner, self.rounds = inner, []

    @property
    def num_clients(self):
        return self.inner.num_clients

    def collect(self, params, client_ids, round_index, *args):
        self.rounds.append(round_index)
        return self.inner.collect(params, client_ids, round_index, *args)


def ledger_rounds(out):
    return [entry["round"] for entry in read_entries(out / "privacy_ledger.jsonl")[1]]


@pytest.fixture(scope="module")
def uninterrupted():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        e = experiment()
        metrics = execute(e)
    return metrics, e.state.params


@pytest.mark.parametrize(
    ("when", "rerun"),
    [("before the ledger entry", [2, 3]), ("after the ledger entry", [3])],
)
def test_a_kill_at_either_commit_point_neither_loses_nor_double_counts(
    tmp_path, monkeypatch, uninterrupted, when, rerun
):
    record = PrivacyLedger.record

    def dying(ledger, round_index, events):
        if round_index == 2 and when == "before the ledger entry":
            raise Killed
        spent = record(ledger, round_index, events)
        if round_index == 2:
            raise Killed
        return spent

    monkeypatch.setattr(PrivacyLedger, "record", dying)
    with pytest.raises(Killed):
        run_rounds(experiment(), experiment().transport, tmp_path)
    assert ledger_rounds(tmp_path) == ([1] if when == "before the ledger entry" else [1, 2])
    monkeypatch.setattr(PrivacyLedger, "record", record)

    restarted = experiment()
    transport = CountingTransport(restarted.transport)
    metrics = run_rounds(restarted, transport, tmp_path)
    assert transport.rounds == rerun
    assert ledger_rounds(tmp_path) == [1, 2, 3]  # every round recorded exactly once
    expected, params = uninterrupted
    assert metrics["final"]["epsilon"] == pytest.approx(expected["final"]["epsilon"], rel=1e-12)
    assert [r["round"] for r in metrics["rounds"]] == [1, 2, 3]
    assert [r["epsilon"] for r in metrics["rounds"]] == pytest.approx(
        [r["epsilon"] for r in expected["rounds"]]
    )
    for name, value in params.items():  # seeded noise: the very same model as without the kill
        torch.testing.assert_close(restarted.state.params[name], value)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["round-000003.json"]
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["final"]["rounds"] == ROUNDS


def test_a_finished_run_restarted_does_nothing_more(tmp_path):
    run_rounds(experiment(), experiment().transport, tmp_path)
    again = experiment()
    transport = CountingTransport(again.transport)
    metrics = run_rounds(again, transport, tmp_path)
    assert transport.rounds == [] and ledger_rounds(tmp_path) == [1, 2, 3]
    assert metrics["final"]["rounds"] == ROUNDS


def test_a_run_without_dp_resumes_from_its_newest_checkpoint(tmp_path, monkeypatch):
    plain = {"privacy": None}
    e = experiment(**plain)
    calls = []

    def dying(records, path):
        calls.append(path)
        if len(calls) == 3:  # metrics.json of round 2: after round 2's checkpoint
            raise Killed

    monkeypatch.setattr("veil.runtime.grpc.coordinator.write_json_atomic", dying)
    with pytest.raises(Killed):
        run_rounds(e, e.transport, tmp_path)
    monkeypatch.undo()
    restarted = experiment(**plain)
    transport = CountingTransport(restarted.transport)
    metrics = run_rounds(restarted, transport, tmp_path)
    assert transport.rounds == [3]
    assert [r["round"] for r in metrics["rounds"]] == [1, 2, 3]
    assert metrics["final"]["epsilon"] is None


def test_a_failed_round_is_tried_again_then_the_run_stops(tmp_path):
    e = experiment()
    failures = []

    class Flaky(CountingTransport):
        def collect(self, *args):
            if len(failures) < 2:
                failures.append(1)
                raise ProtocolError("round fails at stage 'masked input'")
            return super().collect(*args)

    metrics = run_rounds(e, Flaky(e.transport), tmp_path, retry_pause=0)
    assert metrics["final"]["rounds"] == ROUNDS and metrics["final"]["stopped"] is None

    class Broken(CountingTransport):
        def collect(self, *args):
            raise ProtocolError("nobody answered")

    e = experiment()
    metrics = run_rounds(e, Broken(e.transport), tmp_path / "b", max_failed_rounds=2, retry_pause=0)
    assert metrics["final"]["rounds"] == 0
    assert metrics["final"]["stopped"] == "round 1 failed 2 times: nobody answered"


def test_a_refused_release_stops_the_run_and_leaves_no_checkpoint(tmp_path, uninterrupted):
    spent = [r["epsilon"] for r in uninterrupted[0]["rounds"]]
    private = {**CONFIG["privacy"], "budget_epsilon": (spent[1] + spent[2]) / 2}  # two rounds
    e = experiment(privacy=private)
    metrics = run_rounds(e, e.transport, tmp_path)
    assert metrics["final"]["rounds"] == 2 and "over the budget" in metrics["final"]["stopped"]
    assert ledger_rounds(tmp_path) == [1, 2]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["round-000002.json"]


def test_held_events_keep_the_latest_round():
    held = HeldEvents()
    held.record(1, ["a"])
    held.record(2, ["b", "c"])
    assert held.events == ["b", "c"]


def test_update_kind_and_bounds_follow_the_config():
    assert update_kind(parse_config(CONFIG)) == "plain"
    assert max_update_norm(parse_config(CONFIG)) == 0.5
    secure = {**CONFIG, "privacy": {**CONFIG["privacy"], "accountant": "rdp"}}
    secure["secure_aggregation"] = {"neighbors": 2}
    assert update_kind(parse_config(secure)) == "ring"
    assert max_update_norm(parse_config(secure)) is None
    assert update_kind(parse_config({"encryption": {"clip_norm": 1.0}})) == "encrypted"
    assert max_update_norm(parse_config({})) is None
    assert min_updates(parse_config(secure), build_experiment(parse_config(secure))) == 2
    assert min_updates(parse_config(CONFIG), experiment()) == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"secure_aggregation": {"neighbors": 2, "simulated_dropout": 0.1}},
            "simulated_dropout is for the simulator",
        ),
        ({"runtime": {"backend": "ray"}}, "runtime.backend 'ray' trains the clients of one"),
        (
            {
                "aggregation": {"tee": {}},
                "secure_aggregation": {"neighbors": 2, "threshold": 2, "clip_norm": 1.0},
            },
            r"aggregation\.tee with secure_aggregation is not deployable",
        ),
    ],
)
def test_simulator_only_settings_are_refused_by_a_deployment(changes, message):
    check_deployable(parse_config({}))
    with pytest.raises(ConfigError, match=message):
        check_deployable(parse_config({**CONFIG, "privacy": None, **changes}))
