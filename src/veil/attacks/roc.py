"""ROC curves of membership inference attacks: AUC, TPR at low FPR, and a log-log plot.

An attack gives every candidate record a score (higher: more likely a member). Thresholding the
score at every value it takes traces the ROC curve: TPR(t) = #{members with score ≥ t} / #members
against FPR(t) = #{non-members with score ≥ t} / #non-members. Tied scores are one threshold, so
the curve jumps diagonally across them and the trapezoidal AUC counts a tied member/non-member
pair as ½ (the Mann–Whitney U statistic). Carlini et al. 2022 ("Membership Inference Attacks From
First Principles") argue that the AUC hides what matters, confident identification of a few
members, and report TPR at a low FPR such as 0.1% on log-log axes; so do we.

TPR at FPR α is the largest TPR of a point of the curve with FPR ≤ α. With n non-members the
smallest non-zero FPR is 1/n, so below that only the threshold with no false positive counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from veil.errors import ConfigError
from veil.report import figure_to_svg

LOW_FPRS = {"tpr_at_0.1%_fpr": 0.001, "tpr_at_1%_fpr": 0.01}


@dataclass(frozen=True)
class RocSummary:
    """One attack's ROC curve (``fpr``, ``tpr``, from (0, 0) to (1, 1)) and its summary figures."""

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float
    tpr_at_0_1pct_fpr: float
    tpr_at_1pct_fpr: float
    num_members: int
    num_non_members: int

    def to_json(self, max_points: int = 0) -> dict[str, Any]:
        """The figures as a JSON-ready dict; with ``max_points`` > 0 also the curve, thinned to
        at most that many points spread evenly on a log scale of FPR (the ends always kept)."""
        if max_points < 0:
            raise ConfigError(f"max_points must be >= 0 (got {max_points})")
        summary: dict[str, Any] = {
            "auc": self.auc,
            "tpr_at_0.1%_fpr": self.tpr_at_0_1pct_fpr,
            "tpr_at_1%_fpr": self.tpr_at_1pct_fpr,
            "num_members": self.num_members,
            "num_non_members": self.num_non_members,
        }
        if max_points:
            keep = _thinned_indices(self.fpr, max_points)
            summary["fpr"] = self.fpr[keep].tolist()
            summary["tpr"] = self.tpr[keep].tolist()
        return summary


def roc_summary(scores: np.ndarray, is_member: np.ndarray) -> RocSummary:
    """The ROC curve of ``scores`` (higher: more likely a member) against the truth ``is_member``.

    Both are 1-D of the same length; ``scores`` must be finite and ``is_member`` must hold at
    least one member and one non-member. Equal scores form one threshold (see the module
    docstring), so the AUC equals ``sklearn.metrics.roc_auc_score``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(is_member)
    if scores.ndim != 1 or truth.shape != scores.shape:
        raise ConfigError(
            f"scores and is_member must be 1-D arrays of the same length (got shapes "
            f"{scores.shape} and {truth.shape})"
        )
    if not np.isfinite(scores).all():
        raise ConfigError("scores must be finite (got NaN or inf); check the attack's inputs")
    if truth.dtype != bool:
        if not np.isin(truth, (0, 1)).all():
            raise ConfigError("is_member must hold booleans or 0/1 values")
        truth = truth.astype(bool)
    members, non_members = int(truth.sum()), int((~truth).sum())
    if members == 0 or non_members == 0:
        raise ConfigError(
            f"a ROC curve needs members and non-members (got {members} members, {non_members} "
            "non-members)"
        )
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], truth[order]
    last_of_tie = np.r_[ranked[1:] != ranked[:-1], True]  # cut the curve only between values
    tp = np.cumsum(hits)[last_of_tie]
    fp = np.cumsum(~hits)[last_of_tie]
    tpr = np.r_[0.0, tp / members]
    fpr = np.r_[0.0, fp / non_members]
    low = {name: float(tpr[fpr <= alpha].max()) for name, alpha in LOW_FPRS.items()}
    return RocSummary(
        fpr=fpr,
        tpr=tpr,
        auc=float(np.trapezoid(tpr, fpr)),
        tpr_at_0_1pct_fpr=low["tpr_at_0.1%_fpr"],
        tpr_at_1pct_fpr=low["tpr_at_1%_fpr"],
        num_members=members,
        num_non_members=non_members,
    )


def _thinned_indices(fpr: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` points of an increasing ``fpr``, spread evenly in log FPR
    (each kept point is the first at or after its grid value), first and last always kept."""
    if len(fpr) <= max_points:
        return np.arange(len(fpr))
    if max_points < 2:
        raise ConfigError(f"max_points must be 0 or >= 2 to keep both ends (got {max_points})")
    positive = fpr[fpr > 0]
    smallest = positive.min() if positive.size else 1.0
    grid = np.geomspace(smallest, 1.0, max_points - 1)
    keep = np.unique(np.r_[0, np.searchsorted(fpr, grid), len(fpr) - 1].clip(0, len(fpr) - 1))
    return keep


def roc_svg(curves: Mapping[str, RocSummary]) -> str:
    """The curves on log-log axes, as in Carlini et al. 2022, with the chance diagonal, as SVG.

    The legend gives each curve's AUC and TPR at 0.1% FPR. The axes start at the smallest
    non-zero FPR any curve can reach (1 / its number of non-members); points at FPR 0 sit on
    that edge. Each curve's line has the SVG id ``veil-roc-<i>`` (i in the mapping's order).
    """
    if not curves:
        raise ConfigError("roc_svg needs at least one curve (got none)")
    floor = min(1.0 / curve.num_non_members for curve in curves.values())
    figure = Figure(figsize=(5, 4.6), layout="constrained")
    axes = figure.subplots()
    axes.plot([floor, 1], [floor, 1], color="gray", linestyle="--", linewidth=1, label="chance")
    for index, (name, curve) in enumerate(curves.items()):
        label = f"{name}: AUC {curve.auc:.3f}, TPR@0.1% {curve.tpr_at_0_1pct_fpr:.3f}"
        (line,) = axes.plot(
            np.maximum(curve.fpr, floor), np.maximum(curve.tpr, floor), label=label, linewidth=1.5
        )
        line.set_gid(f"veil-roc-{index}")
    axes.set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1))
    axes.set(xlabel="false positive rate", ylabel="true positive rate")
    axes.set_title("Membership inference ROC (log-log)")
    axes.grid(alpha=0.3, which="both")
    axes.legend(loc="lower right", fontsize="small")
    return figure_to_svg(figure, id_salt="veil-roc")
