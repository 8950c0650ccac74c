"""A local-DP frequency-estimation run (``task: frequency_estimation``), e.g. the keyboard example.

Simulated phones each report one typed word through a local-DP frequency oracle; the server
estimates every word's frequency, and the run reports the error against the true frequencies.
Each phone's single report is recorded in the privacy ledger under the subject ``"each phone"``
(every phone runs the same mechanism once, so one entry states every phone's guarantee).
"""

from __future__ import annotations

import time
from html import escape
from pathlib import Path
from typing import Any

from veil.config import RunConfig
from veil.data.keyboard import make_keyboard
from veil.experiment import prepare_output_directory
from veil.privacy.ldp_keyboard import estimate_word_frequencies, to_metrics
from veil.privacy.ledger import LedgerSettings, PrivacyLedger, SubjectEvent
from veil.randomness import noise_generator
from veil.report import ReportSection, write_json_atomic, write_report

SUBJECT = "each phone"
DELTA = 1e-12  # the oracles are pure ε-LDP; the ledger needs some δ for its accountant


def run_frequency_estimation(
    config: RunConfig, out_dir: str | Path | None = None
) -> dict[str, Any]:
    """Generate the phones, collect their reports, estimate frequencies; metrics (and files)."""
    started = time.perf_counter()
    f = config.frequency
    data = make_keyboard(
        num_phones=f.num_phones,
        vocab_size=f.vocab_size,
        words_per_phone=f.words_per_phone,
        zipf_exponent=f.zipf_exponent,
        personal_weight=f.personal_weight,
        seed=config.seed,
    )
    out = None if out_dir is None else prepare_output_directory(Path(out_dir))
    settings = LedgerSettings(delta=DELTA, neighboring="replace_one")
    ledger = (
        PrivacyLedger.open(out / "privacy_ledger.jsonl", settings)
        if out
        else PrivacyLedger.in_memory(settings)
    )
    estimate = estimate_word_frequencies(
        data,
        oracle=f.oracle,
        epsilon=f.epsilon,
        generator=noise_generator(f.noise_seed_for_testing),
    )
    spent = ledger.record(1, [SubjectEvent(SUBJECT, estimate.dp_event)])
    result = to_metrics(estimate)
    metrics = {
        "config": config.model_dump(mode="json"),
        "rounds": [],
        "final": {
            "accuracy": None,
            "loss": None,
            "epsilon": spent,
            "delta": 0.0,
            "claim": claim(result["oracle"], f.epsilon, f.num_phones),
            "seconds": time.perf_counter() - started,
        },
        "frequency_estimation": result,
    }
    if out is not None:
        write_json_atomic(metrics, out / "metrics.json")
        write_report(metrics, out / "report.html", sections=[top_words_section(result)])
    return metrics


def claim(oracle: str, epsilon: float, num_phones: int) -> str:
    """The claim sentence of a local-DP collection."""
    return (
        f"Each of the {num_phones} phones sends one report that is {epsilon:g}-locally "
        f"differentially private ({oracle.upper()} frequency oracle) with respect to everything it "
        "typed: the server, untrusted, learns only noisy reports; a phone that reports again "
        "spends ε again."
    )


def top_words_section(result: dict[str, Any]) -> ReportSection:
    """A report section: estimation error and the most frequent words, true against estimated."""
    rows = "".join(
        f"<tr><td>{escape(w['word'])}</td><td>{w['true_frequency']:.4f}</td>"
        f"<td>{w['estimated_frequency']:.4f}</td></tr>"
        for w in result["top_words"]
    )
    summary = (
        f"<p>L∞ error {result['linf_error']:.4f}, L1 error {result['l1_error']:.3f}, "
        f"top-10 recall {result['top10_recall']:.2f}, "
        f"theoretical std {result['theoretical_std']:.4f}.</p>"
    )
    table = (
        "<table><thead><tr><th>word</th><th>true frequency</th><th>estimated</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    return ReportSection("Word frequencies under local DP", summary + table)
