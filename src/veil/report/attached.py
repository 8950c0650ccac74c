"""Results attached to a finished run's report: attacks, audits, fairness studies.

``veil attack NAME CONFIG --out DIR`` saves its section as ``DIR/sections/NAME.json`` and
re-renders ``DIR/report.html`` from ``DIR/metrics.json`` plus every saved section, so the report
of a run collects everything that was measured about it. ``veil run`` clears the folder when it
starts a run in ``DIR``: sections about an earlier run must not land in a new run's report.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from veil.errors import check
from veil.report.html import ReportSection, write_report
from veil.report.metrics_file import read_metrics, write_json_atomic

SECTIONS = "sections"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def attach_section(out_dir: str | Path, name: str, section: ReportSection) -> Path:
    """Save ``section`` under ``name`` (lower case, digits, dashes) and re-render the report."""
    check(bool(_NAME.match(name)), f"section name must be lower-case words and dashes: {name!r}")
    out = Path(out_dir)
    path = out / SECTIONS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic({"title": section.title, "html": section.html}, path)
    write_report(read_metrics(out / "metrics.json"), out / "report.html", attached_sections(out))
    return path


def attached_sections(out_dir: str | Path) -> list[ReportSection]:
    """The sections saved for the run in ``out_dir``, by name."""
    folder = Path(out_dir) / SECTIONS
    sections = []
    for path in sorted(folder.glob("*.json")):
        saved = json.loads(path.read_text(encoding="utf-8"))
        sections.append(ReportSection(str(saved["title"]), str(saved["html"])))
    return sections


def clear_sections(out_dir: str | Path) -> None:
    """Forget the sections attached to an earlier run in ``out_dir``."""
    shutil.rmtree(Path(out_dir) / SECTIONS, ignore_errors=True)
