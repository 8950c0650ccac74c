import json

import pytest

from veil.errors import ConfigError
from veil.report import ReportSection, write_json_atomic
from veil.report.attached import attach_section, attached_sections, clear_sections


@pytest.fixture
def run_dir(tmp_path):
    metrics = {"config": {"name": "attacked"}, "rounds": [], "final": {"claim": "c"}}
    write_json_atomic(metrics, tmp_path / "metrics.json")
    return tmp_path


def test_attached_sections_land_in_the_report_in_name_order(run_dir):
    attach_section(run_dir, "membership", ReportSection("Membership", "<p>m-body</p>"))
    attach_section(run_dir, "audit", ReportSection("Audit", "<p>a-body</p>"))
    assert [s.title for s in attached_sections(run_dir)] == ["Audit", "Membership"]
    html = (run_dir / "report.html").read_text()
    assert html.index("a-body") < html.index("m-body") < html.index("Run config")
    saved = json.loads((run_dir / "sections" / "audit.json").read_text())
    assert saved == {"title": "Audit", "html": "<p>a-body</p>"}


def test_attaching_again_replaces_the_section(run_dir):
    attach_section(run_dir, "audit", ReportSection("Audit", "<p>old</p>"))
    attach_section(run_dir, "audit", ReportSection("Audit", "<p>new</p>"))
    html = (run_dir / "report.html").read_text()
    assert "new" in html and "<p>old</p>" not in html


def test_clear_sections_forgets_them(run_dir):
    attach_section(run_dir, "audit", ReportSection("Audit", "x"))
    clear_sections(run_dir)
    assert attached_sections(run_dir) == []
    clear_sections(run_dir)  # nothing to clear: fine


def test_bad_section_name_and_missing_run_are_refused(run_dir, tmp_path_factory):
    with pytest.raises(ConfigError, match="section name"):
        attach_section(run_dir, "../escape", ReportSection("t", "x"))
    with pytest.raises(ConfigError, match="metrics"):
        attach_section(tmp_path_factory.mktemp("empty"), "audit", ReportSection("t", "x"))
