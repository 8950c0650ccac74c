import os
import signal
import subprocess
import sys
import textwrap
import time

import dp_accounting
import pytest

from veil.errors import ConfigError, PrivacyBudgetExceeded
from veil.privacy.accounting import compose, epsilon
from veil.privacy.ledger import (
    LedgerSettings,
    PrivacyLedger,
    SubjectEvent,
    event_from_json,
    event_to_json,
    read_entries,
)

STEP = dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.0))
SETTINGS = LedgerSettings(delta=1e-5, budget_epsilon=10.0)


def test_events_round_trip_through_json():
    nested = dp_accounting.ComposedDpEvent(
        [dp_accounting.SelfComposedDpEvent(STEP, 7), dp_accounting.LaplaceDpEvent(2.0)]
    )
    assert event_from_json(event_to_json(nested)) == nested


def test_only_dp_accounting_events_are_loaded():
    with pytest.raises(ConfigError, match="unknown DP event type in ledger: 'Popen'"):
        event_from_json({"type": "Popen", "args": ["true"]})


def test_recorded_events_persist_and_epsilon_comes_from_the_events(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = PrivacyLedger.open(path, SETTINGS)
    for r in range(1, 4):
        spent = ledger.record(r, [STEP])
    assert spent == pytest.approx(epsilon(dp_accounting.SelfComposedDpEvent(STEP, 3), 1e-5))
    reopened = PrivacyLedger.open(path, SETTINGS)
    assert reopened.releases == 3 and reopened.epsilon() == pytest.approx(spent)
    settings, entries = read_entries(path)
    assert settings == SETTINGS and [e["round"] for e in entries] == [1, 2, 3]


def test_an_overspending_release_is_refused_and_not_written(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = PrivacyLedger.open(path, LedgerSettings(delta=1e-5, budget_epsilon=2.0))
    ledger.record(1, [STEP])
    size = path.stat().st_size
    big = dp_accounting.GaussianDpEvent(0.5)
    with pytest.raises(
        PrivacyBudgetExceeded, match=r"round 2 would raise ε .* over the budget of 2"
    ):
        ledger.record(2, [big])
    assert path.stat().st_size == size and ledger.releases == 1
    assert ledger.would_spend([big]) > 2.0 >= ledger.epsilon()


def test_subjects_have_separate_budgets_and_one_refusal_stops_the_release(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = PrivacyLedger.open(path, LedgerSettings(delta=1e-5, budget_epsilon=2.0))
    small, big = dp_accounting.GaussianDpEvent(3.0), dp_accounting.GaussianDpEvent(0.5)
    spent = ledger.record(1, [SubjectEvent("phone-1", small), SubjectEvent("phone-2", small)])
    assert ledger.epsilon("phone-2") == ledger.epsilon("phone-1") == spent > 0
    assert ledger.epsilon("phone-3") == 0.0 and ledger.epsilon() == 0.0
    size = path.stat().st_size
    with pytest.raises(PrivacyBudgetExceeded, match=r"'phone-2' .* over the budget of 2"):
        ledger.record(2, [SubjectEvent("phone-1", small), SubjectEvent("phone-2", big)])
    assert path.stat().st_size == size and ledger.epsilon("phone-1") == spent
    ledger.record(3, [SubjectEvent("phone-1", small)])
    assert ledger.max_epsilon() == ledger.epsilon("phone-1") > ledger.epsilon("phone-2")
    reopened = PrivacyLedger.load(path)
    assert reopened.releases == 2 and reopened.epsilon("phone-1") == ledger.epsilon("phone-1")


def test_reopening_with_other_settings_is_refused(tmp_path):
    path = tmp_path / "ledger.jsonl"
    PrivacyLedger.open(path, SETTINGS)
    with pytest.raises(ConfigError, match=r"was created with .* use the same privacy settings"):
        PrivacyLedger.open(path, LedgerSettings(delta=1e-6, budget_epsilon=10.0))


def test_torn_last_line_is_skipped_but_corruption_is_reported(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = PrivacyLedger.open(path, SETTINGS)
    ledger.record(1, [STEP])
    with open(path, "ab") as file:
        file.write(b'{"round": 2, "subj')  # killed mid-write: never acknowledged
    assert PrivacyLedger.open(path, SETTINGS).releases == 1
    with open(path, "ab") as file:
        file.write(b"\n" + b'{"round": 3}\n')
    with pytest.raises(ConfigError, match="line 3 is corrupt"):
        read_entries(path)


def test_not_a_ledger(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"hello": 1}\n')
    with pytest.raises(ConfigError, match="is not a veil privacy ledger"):
        PrivacyLedger.open(path, SETTINGS)
    with pytest.raises(ConfigError, match="cannot read ledger"):
        read_entries(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delta": 0}, r"ledger delta must be in \(0, 1\) \(got 0\)"),
        ({"delta": 1e-5, "budget_epsilon": -1}, "budget_epsilon must be > 0"),
        ({"delta": 1e-5, "accountant": "moments"}, r"accountant must be one of \['pld', 'rdp'\]"),
        ({"delta": 1e-5, "neighboring": "swap"}, "neighboring must be one of"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LedgerSettings(**kwargs)


def test_a_killed_writer_never_loses_an_acknowledged_release(tmp_path):
    """SIGKILL a process that records releases; every release it acknowledged is in the file."""
    path = tmp_path / "ledger.jsonl"
    script = textwrap.dedent(
        f"""
        import dp_accounting, sys
        from veil.privacy.ledger import LedgerSettings, PrivacyLedger
        ledger = PrivacyLedger.open({str(path)!r}, LedgerSettings(delta=1e-5, accountant="rdp"))
        event = dp_accounting.GaussianDpEvent(50.0)
        for r in range(1, 100000):
            ledger.record(r, [event])
            print(r, flush=True)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acknowledged = 0
    deadline = time.monotonic() + 60
    while acknowledged < 15 and time.monotonic() < deadline:
        acknowledged = int(child.stdout.readline())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    reopened = PrivacyLedger.open(path, LedgerSettings(delta=1e-5, accountant="rdp"))
    assert acknowledged >= 15 and reopened.releases >= acknowledged
    expected = epsilon(
        compose([dp_accounting.GaussianDpEvent(50.0)] * reopened.releases), 1e-5, "rdp"
    )
    assert reopened.epsilon() == pytest.approx(expected)
