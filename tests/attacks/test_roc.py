import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from veil.attacks.roc import RocSummary, roc_summary, roc_svg
from veil.errors import ConfigError


def _tied_scores(seed: int, n: int = 400):
    rng = np.random.default_rng(seed)
    is_member = rng.random(n) < 0.4
    scores = rng.integers(0, 12, n) + is_member * rng.integers(0, 3, n)  # many ties
    return scores.astype(float), is_member


@pytest.mark.parametrize("seed", range(4))
def test_roc_summary_matches_sklearn_with_ties(seed):
    scores, is_member = _tied_scores(seed)
    summary = roc_summary(scores, is_member)
    fpr, tpr, _ = roc_curve(is_member, scores, drop_intermediate=False)
    np.testing.assert_allclose(summary.fpr, fpr)
    np.testing.assert_allclose(summary.tpr, tpr)
    assert summary.auc == pytest.approx(roc_auc_score(is_member, scores), abs=1e-12)
    assert (summary.num_members, summary.num_non_members) == (
        int(is_member.sum()),
        int((~is_member).sum()),
    )


def test_tpr_at_low_fpr_counts_members_above_every_non_member():
    non_members = np.arange(200.0)  # FPR steps of 0.5%
    members = np.r_[[1000.0, 999.0, 998.0], [198.5], np.full(6, -1.0)]
    summary = roc_summary(np.r_[members, non_members], np.r_[np.ones(10), np.zeros(200)])
    assert summary.tpr_at_0_1pct_fpr == pytest.approx(0.3)  # only FPR 0 is <= 0.1%
    assert summary.tpr_at_1pct_fpr == pytest.approx(0.4)  # FPR 1% admits the member at 198.5


def test_perfect_reversed_and_constant_scores():
    truth = np.r_[np.ones(5, bool), np.zeros(5, bool)]
    perfect = roc_summary(np.arange(10.0)[::-1], truth)
    assert (perfect.auc, perfect.tpr_at_0_1pct_fpr) == (1.0, 1.0)
    assert roc_summary(np.arange(10.0), truth).auc == 0.0
    constant = roc_summary(np.zeros(10), truth)
    assert constant.auc == 0.5
    np.testing.assert_array_equal(constant.fpr, [0, 1])
    np.testing.assert_array_equal(constant.tpr, [0, 1])
    assert constant.tpr_at_1pct_fpr == 0.0


def test_roc_summary_accepts_zero_one_labels():
    scores, is_member = _tied_scores(7)
    assert roc_summary(scores, is_member.astype(int)).auc == roc_summary(scores, is_member).auc


@pytest.mark.parametrize(
    ("scores", "is_member", "message"),
    [
        (np.zeros(3), np.zeros(4, bool), "same length"),
        (np.zeros((2, 2)), np.zeros((2, 2), bool), "1-D"),
        (np.array([0.0, np.nan]), np.array([True, False]), "finite"),
        (np.array([0.0, np.inf]), np.array([True, False]), "finite"),
        (np.zeros(3), np.array([0, 1, 2]), "booleans or 0/1"),
        (np.zeros(3), np.ones(3, bool), "3 members, 0 non-members"),
        (np.zeros(3), np.zeros(3, bool), "0 members, 3 non-members"),
    ],
)
def test_roc_summary_rejects_bad_input(scores, is_member, message):
    with pytest.raises(ConfigError, match=message):
        roc_summary(scores, is_member)


def test_to_json_without_and_with_thinned_curve():
    scores, is_member = _tied_scores(1, n=3000)
    scores = scores + np.random.default_rng(1).random(3000)  # no ties: ~3000 points
    summary = roc_summary(scores, is_member)
    plain = summary.to_json()
    assert set(plain) == {
        "auc",
        "tpr_at_0.1%_fpr",
        "tpr_at_1%_fpr",
        "num_members",
        "num_non_members",
    }
    assert plain["auc"] == summary.auc
    thin = summary.to_json(max_points=50)
    assert 2 < len(thin["fpr"]) <= 50 and len(thin["fpr"]) == len(thin["tpr"])
    assert (thin["fpr"][0], thin["tpr"][0], thin["fpr"][-1], thin["tpr"][-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(thin["fpr"]) >= 0)
    small = roc_summary(np.arange(4.0), np.array([0, 1, 0, 1]))
    assert len(small.to_json(max_points=50)["fpr"]) == len(small.fpr)


@pytest.mark.parametrize(("max_points", "message"), [(-1, ">= 0"), (1, "0 or >= 2")])
def test_to_json_rejects_bad_max_points(max_points, message):
    summary = roc_summary(*_tied_scores(2))
    with pytest.raises(ConfigError, match=message):
        summary.to_json(max_points)


def test_roc_svg_draws_every_curve_and_escapes_names():
    curves = {
        "loss": roc_summary(*_tied_scores(3)),
        "<b>lira</b>": roc_summary(*_tied_scores(4)),
    }
    svg = roc_svg(curves)
    assert svg.startswith("<svg")
    assert 'id="veil-roc-0"' in svg and 'id="veil-roc-1"' in svg
    assert "&lt;b&gt;lira&lt;/b&gt;" in svg and "<b>" not in svg
    assert "chance" in svg


def test_roc_svg_needs_a_curve():
    with pytest.raises(ConfigError, match="at least one curve"):
        roc_svg({})


def test_roc_summary_is_a_frozen_record():
    summary = roc_summary(*_tied_scores(5))
    assert isinstance(summary, RocSummary)
    with pytest.raises(AttributeError):
        summary.auc = 1.0
