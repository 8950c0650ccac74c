import math

import numpy as np
import pytest
from dp_accounting import dp_event

from veil.audit.bounds import epsilon_lower_bound
from veil.audit.result import AuditResult, ledger_epsilon
from veil.privacy.accounting import dpsgd_epsilon, epsilon
from veil.privacy.ledger import SubjectEvent


def result(claimed=4.0, mechanism="DP-SGD", settings=None):
    rng = np.random.default_rng(0)
    scores_in, scores_out = rng.normal(2, 1, 400), rng.normal(0, 1, 400)
    bound = epsilon_lower_bound(scores_in, scores_out, 1e-5)
    return AuditResult(
        mechanism,
        "white-box gradient canary",
        "sum",
        claimed,
        bound,
        scores_in,
        scores_out,
        settings or {"noise_multiplier": 1.0, "accountant": "pld"},
    )


def test_ledger_epsilon_composes_every_event_and_takes_the_worst_subject():
    step = dp_event.PoissonSampledDpEvent(0.1, dp_event.GaussianDpEvent(1.0))
    assert ledger_epsilon([step] * 30, 1e-5, "pld") == pytest.approx(
        dpsgd_epsilon(1.0, 0.1, 30, 1e-5)
    )
    events = [SubjectEvent("a", dp_event.GaussianDpEvent(2.0))] * 2 + [
        SubjectEvent("b", dp_event.GaussianDpEvent(1.0))
    ]
    assert ledger_epsilon(events, 1e-5, "rdp") == pytest.approx(
        epsilon(dp_event.GaussianDpEvent(1.0), 1e-5, "rdp")
    )


def test_ratio_and_json():
    audit = result(claimed=4.0)
    data = audit.to_json()
    assert data["ratio"] == pytest.approx(audit.bound.epsilon / 4.0)
    assert data["num_runs"] == 800 == audit.num_runs
    assert data["noise_multiplier"] == 1.0 and data["accountant"] == "pld"
    assert data["test"]["threshold"] == audit.bound.threshold
    assert result(claimed=math.inf).ratio == 0.0


def test_report_section_escapes_its_strings():
    section = result(mechanism="<b>DP</b>", settings={"client": "<i>x</i>"}).report_section()
    assert "<b>" not in section.html and "&lt;b&gt;DP&lt;/b&gt;" in section.html
    assert "&lt;i&gt;x&lt;/i&gt;" in section.html
    assert section.html.count("<svg") == 1
