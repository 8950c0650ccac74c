"""A run's outputs: ``metrics.json`` (written atomically) and a self-contained HTML report.

``veil run`` writes ``metrics.json`` of this shape (unknown keys are ignored everywhere)::

    {"config": {...},
     "rounds": [{"round": 1, "accuracy": 0.91, "loss": 0.30, "epsilon": null, "seconds": 0.12}],
     "final": {"accuracy": 0.96, "loss": 0.11, "epsilon": null, "delta": null, "claim": "..."},
     "clients": [{"name": "client_0", "accuracy": 0.97, "loss": 0.1, "num_train": 80,
                  "num_test": 20}]}

``epsilon`` / ``delta`` are null for a run without DP, ``final`` is null while the run is in
progress, and ``clients`` may be missing. Example::

    from veil.report import read_metrics, write_report
    write_report(read_metrics("runs/demo/metrics.json"), "runs/demo/report.html")
"""

from veil.report.html import ReportSection, render_report, write_report
from veil.report.metrics_file import read_metrics, write_json_atomic, write_text_atomic
from veil.report.plots import (
    accuracy_loss_svg,
    client_accuracy_svg,
    epsilon_svg,
    figure_to_svg,
)

__all__ = [
    "ReportSection",
    "accuracy_loss_svg",
    "client_accuracy_svg",
    "epsilon_svg",
    "figure_to_svg",
    "read_metrics",
    "render_report",
    "write_json_atomic",
    "write_report",
    "write_text_atomic",
]
