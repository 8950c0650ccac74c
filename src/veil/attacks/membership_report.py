"""The outcome of a membership inference attack on a run: figures, JSON, and a report section.

`MembershipResult` is what `veil.attacks.membership.run_membership_attack` returns: one ROC
summary per attack (`veil.attacks.roc`) and what the attacked run was (its ε, its accuracy on
members, non-members and test rows), as JSON for metrics files and as an HTML section with the
log-log ROC plot for `veil.report.write_report`.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from veil.attacks.roc import RocSummary, roc_svg
from veil.report import ReportSection

ATTACK_TITLES = {
    "loss": "loss threshold (Yeom et al. 2018)",
    "lira": "LiRA online (Carlini et al. 2022)",
    "lira_offline": "LiRA offline (Carlini et al. 2022)",
    "rmia": "RMIA online (Zarifzadeh et al. 2024)",
    "rmia_offline": "RMIA offline (Zarifzadeh et al. 2024)",
}


@dataclass(frozen=True)
class MembershipResult:
    """Attack figures on one target run.

    ``attacks`` maps attack name to its ROC; ``epsilon``/``delta`` are the target's DP guarantee
    (``None`` without DP); accuracies are the target's on its members, on the candidates left
    out (non-members) and on the run's test rows; ``offline_a`` is RMIA's tuned coefficient.
    """

    name: str
    attacks: dict[str, RocSummary]
    epsilon: float | None
    delta: float | None
    accuracy: float
    member_accuracy: float
    non_member_accuracy: float
    num_shadow: int
    offline_a: float | None
    seconds: float

    def to_json(self, max_points: int = 0) -> dict[str, Any]:
        """``{"attacks": {name: {"auc", "tpr_at_0.1%_fpr", "tpr_at_1%_fpr", ...}}, "epsilon",
        ...}``; ``max_points`` > 0 adds each thinned ROC curve (`RocSummary.to_json`)."""
        return {
            "name": self.name,
            "attacks": {name: roc.to_json(max_points) for name, roc in self.attacks.items()},
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accuracy": self.accuracy,
            "member_accuracy": self.member_accuracy,
            "non_member_accuracy": self.non_member_accuracy,
            "num_shadow": self.num_shadow,
            "offline_a": self.offline_a,
            "seconds": self.seconds,
        }

    def report_section(self) -> ReportSection:
        """A report section: what was attacked, a table of the figures and the ROC plot."""
        guarantee = (
            "no differential privacy"
            if self.epsilon is None
            else f"(ε = {self.epsilon:.3g}, δ = {self.delta:g})-DP"
        )
        first = next(iter(self.attacks.values()))
        intro = (
            f"Target: run {self.name!r} with {guarantee}, trained on {first.num_members} "
            f"members; {first.num_non_members} non-members held out; {self.num_shadow} shadow "
            f"runs. Accuracy on members {self.member_accuracy:.3f}, non-members "
            f"{self.non_member_accuracy:.3f}, test rows {self.accuracy:.3f}. An AUC near 0.5 "
            "and TPR near the FPR mean the attack cannot tell members apart."
        )
        rows = "".join(
            f"<tr><td>{escape(ATTACK_TITLES.get(name, name))}</td><td>{roc.auc:.3f}</td>"
            f"<td>{roc.tpr_at_0_1pct_fpr:.3f}</td><td>{roc.tpr_at_1pct_fpr:.3f}</td></tr>"
            for name, roc in self.attacks.items()
        )
        table = (
            "<table><thead><tr><th>attack</th><th>AUC</th><th>TPR at 0.1% FPR</th>"
            f"<th>TPR at 1% FPR</th></tr></thead><tbody>{rows}</tbody></table>"
        )
        html = (
            f"<p>{escape(intro)}</p>\n{table}\n<figure>{roc_svg(self.attacks)}"
            "<figcaption>ROC curves on log-log axes; dashed: chance.</figcaption></figure>"
        )
        return ReportSection("Membership inference", html)
