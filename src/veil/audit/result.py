"""The outcome of a canary audit: claimed ε against the empirical lower bound, as JSON and as a
report section (Jagielski et al. 2020; Nasr et al. 2023).

The claim is what veil's privacy ledger reports for the audited mechanism; the bound is
`veil.audit.bounds.epsilon_lower_bound` of the audit statistic over independent runs with and
without the canary. A sound implementation never has bound > claim (beyond the bound's 1 −
confidence failure probability); ratio = bound / claim says how much of the claim the audit
could confirm empirically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import numpy as np
from dp_accounting import DpEvent
from matplotlib.figure import Figure

from veil.audit.bounds import EpsilonBound, epsilon_lower_bound
from veil.errors import check
from veil.privacy.ledger import LedgerSettings, PrivacyLedger, SubjectEvent
from veil.report import ReportSection, figure_to_svg

HISTOGRAM_BINS = 80


def ledger_epsilon(
    events: Sequence[DpEvent | SubjectEvent], delta: float, accountant: str
) -> float:
    """The largest ε (over subjects) that a veil privacy ledger with these settings (in memory,
    no budget) reports once it holds ``events``, every release of a run: ε is a function of the
    stored events alone, so recording them at once gives what the run's ledger ends with."""
    ledger = PrivacyLedger.in_memory(LedgerSettings(delta, None, accountant))
    ledger.record(1, events)
    return ledger.max_epsilon()


def check_num_runs(num_runs: int) -> None:
    """`ConfigError` unless ``num_runs`` is an integer >= 8 (two per half of each arm)."""
    check(
        isinstance(num_runs, int) and num_runs >= 8,
        f"num_runs must be an integer >= 8 (got {num_runs!r}); audits need thousands",
    )


@dataclass(frozen=True)
class AuditResult:
    """A canary audit of one mechanism.

    ``scores_in`` / ``scores_out`` are the statistic of every run with / without the canary
    (higher means "in"); ``settings`` are the audited mechanism's parameters (σ, q, steps, ...).
    """

    mechanism: str
    threat_model: str
    statistic: str
    claimed_epsilon: float
    bound: EpsilonBound
    scores_in: np.ndarray = field(repr=False)
    scores_out: np.ndarray = field(repr=False)
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_scores(
        cls,
        mechanism: str,
        threat_model: str,
        statistic: str,
        claimed_epsilon: float,
        scores_in: np.ndarray,
        scores_out: np.ndarray,
        settings: dict[str, Any],
        *,
        delta: float,
        confidence: float,
        split_seed: int,
    ) -> AuditResult:
        """The result of runs scored ``scores_in`` / ``scores_out``: their
        `epsilon_lower_bound` against the claim."""
        bound = epsilon_lower_bound(scores_in, scores_out, delta, confidence, split_seed=split_seed)
        return cls(
            mechanism,
            threat_model,
            statistic,
            claimed_epsilon,
            bound,
            scores_in,
            scores_out,
            settings,
        )

    @property
    def num_runs(self) -> int:
        """Training runs in all, with and without the canary."""
        return len(self.scores_in) + len(self.scores_out)

    @property
    def ratio(self) -> float:
        """ε lower bound / claimed ε (0 when the claim is infinite, i.e. no guarantee)."""
        return (
            self.bound.epsilon / self.claimed_epsilon if np.isfinite(self.claimed_epsilon) else 0.0
        )

    def to_json(self) -> dict[str, Any]:
        """``{"claimed_epsilon", "empirical_epsilon_lower_bound", "ratio", "delta", "num_runs",
        "confidence", "mechanism", "threat_model", ...}`` plus the test and the settings."""
        b = self.bound
        return {
            "claimed_epsilon": self.claimed_epsilon,
            "empirical_epsilon_lower_bound": b.epsilon,
            "ratio": self.ratio,
            "delta": b.delta,
            "num_runs": self.num_runs,
            "confidence": b.confidence,
            "mechanism": self.mechanism,
            "threat_model": self.threat_model,
            "statistic": self.statistic,
            "test": {k: v for k, v in b.to_json().items() if k not in ("epsilon", "delta")},
            **self.settings,
        }

    def report_section(self) -> ReportSection:
        """A histogram of the statistic with and without the canary, and the numbers."""
        b = self.bound
        rows = [
            ("mechanism", self.mechanism),
            ("threat model", self.threat_model),
            ("statistic", self.statistic),
            ("claimed ε (ledger)", f"{self.claimed_epsilon:.4g}"),
            ("empirical ε lower bound", f"{b.epsilon:.4g}"),
            ("ratio", f"{self.ratio:.3f}"),
            ("δ", f"{b.delta:g}"),
            ("runs (with + without canary)", f"{self.num_runs}"),
            ("confidence", f"{b.confidence:g}"),
            ("FPR / FNR upper bounds", f"{b.fpr_upper:.3g} / {b.fnr_upper:.3g}"),
            *((key.replace("_", " "), _text(value)) for key, value in self.settings.items()),
        ]
        table = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
        figure = (
            f"<figure>{self._histogram_svg()}<figcaption>Audit statistic over "
            f"{self.num_runs} runs; dashed: the test's threshold.</figcaption></figure>"
        )
        body = f"{figure}<table><tbody>{table}</tbody></table>"
        return ReportSection(f"Privacy audit: {self.mechanism}, {self.threat_model}", body)

    def _histogram_svg(self) -> str:
        both = np.concatenate([self.scores_in, self.scores_out])
        edges = np.histogram_bin_edges(both, bins=HISTOGRAM_BINS)
        figure = Figure(figsize=(8, 3), layout="constrained")
        axes = figure.subplots()
        for scores, label, color in (
            (self.scores_out, "without canary", "#1f77b4"),
            (self.scores_in, "with canary", "#d62728"),
        ):
            counts, _ = np.histogram(scores, bins=edges)
            axes.stairs(counts, edges, label=label, color=color, fill=True, alpha=0.45)
        axes.axvline(self.bound.threshold, color="black", linestyle="--", linewidth=1)
        axes.set(xlabel=self.statistic, ylabel="runs", yscale="log")
        axes.legend()
        return figure_to_svg(figure, id_salt=f"veil-audit-{self.mechanism}-{self.threat_model}")


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
