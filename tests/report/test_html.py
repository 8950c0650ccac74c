"""Tests of veil.report.html: a self-contained, escaped report page for any stage of a run."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from html import escape, unescape
from html.parser import HTMLParser
from typing import ClassVar

import pytest
import yaml

from veil.errors import ConfigError
from veil.report.html import ReportSection, render_report, write_report

WHEN = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
CLAIM = "The server sees only the sum of ≥3 hospitals' updates; the model is (1.2, 1e-05)-DP."
CLIENTS = [
    {"name": "north", "accuracy": 0.97, "loss": 0.1, "num_train": 80, "num_test": 20},
    {"name": "south", "accuracy": 0.88, "loss": 0.2, "num_train": 120, "num_test": 30},
]


def dp_metrics() -> dict:
    return {
        "config": {"name": "hospitals", "rounds": 3, "dp": {"noise_multiplier": 0.8}},
        "rounds": [
            {
                "round": r,
                "accuracy": 0.8 + r / 100,
                "loss": 0.5 / r,
                "epsilon": 0.4 * r,
                "seconds": 0.12,
            }
            for r in (1, 2, 3)
        ],
        "final": {"accuracy": 0.93, "loss": 0.17, "epsilon": 1.2, "delta": 1e-5, "claim": CLAIM},
        "clients": CLIENTS,
        "unknown_extra_key": {"ignored": True},
    }


def plain_metrics() -> dict:
    metrics = dp_metrics()
    for entry in metrics["rounds"]:
        entry["epsilon"] = None
    metrics["final"].update(epsilon=None, delta=None, claim="The server sees every update.")
    return metrics


@pytest.fixture(scope="module")
def dp_page() -> str:
    return render_report(dp_metrics(), generated_at=WHEN)


class TagBalance(HTMLParser):
    """Records every attribute value and checks that non-void tags close in order."""

    VOID: ClassVar = {"meta", "br", "hr", "img", "input", "link", "col", "wbr", "source"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.attributes: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.attributes += [(name, value or "") for name, value in attrs]
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.attributes += [(name, value or "") for name, value in attrs]

    def handle_endtag(self, tag):
        assert self.open.pop() == tag


def parse(page: str) -> TagBalance:
    parser = TagBalance()
    parser.feed(page)
    parser.close()
    assert parser.open == []
    return parser


def summary(page: str) -> dict[str, str]:
    pairs = re.findall(r'<span class="label">(.*?)</span><span class="value">(.*?)</span>', page)
    return dict(pairs)


def test_page_is_balanced_html_with_title_and_date(dp_page):
    parse(dp_page)
    assert dp_page.startswith("<!DOCTYPE html>")
    assert "<title>veil report: hospitals</title>" in dp_page
    assert "<h1>veil report: hospitals</h1>" in dp_page
    assert '<p class="date">2024-05-01 12:30 UTC</p>' in dp_page


def test_claim_is_in_a_box_before_the_numbers(dp_page):
    box = f'<p class="claim"><strong>Privacy claim:</strong> {escape(CLAIM)}</p>'
    assert box in dp_page
    assert dp_page.index(box) < dp_page.index('class="summary"') < dp_page.index("<svg")


def test_dp_run_shows_epsilon_delta_and_the_epsilon_figure(dp_page):
    assert summary(dp_page) == {
        "Accuracy": "0.9300",
        "Loss": "0.1700",
        "ε": "1.200",
        "δ": "1e-05",
        "Rounds": "3",
    }
    assert dp_page.count("<svg") == 3
    assert 'id="veil-epsilon"' in dp_page
    assert "<tr><td>2</td><td>0.8200</td><td>0.2500</td><td>0.800</td><td>0.12</td></tr>" in dp_page


def test_run_without_dp_says_so_and_has_no_epsilon_figure():
    page = render_report(plain_metrics(), generated_at=WHEN)
    assert summary(page)["ε"] == "no DP"
    assert summary(page)["δ"] == "—"
    assert 'id="veil-epsilon"' not in page
    assert page.count("<svg") == 2
    assert "<tr><td>1</td><td>0.8100</td><td>0.5000</td><td>—</td><td>0.12</td></tr>" in page


def test_client_table_has_one_row_per_client(dp_page):
    assert "<h2>Clients (2)</h2>" in dp_page
    assert "<tr><td>north</td><td>80</td><td>20</td><td>0.9700</td></tr>" in dp_page
    assert "<tr><td>south</td><td>120</td><td>30</td><td>0.8800</td></tr>" in dp_page
    assert 'id="veil-global-accuracy"' in dp_page


def test_config_is_shown_as_yaml(dp_page):
    (block,) = re.findall(r"<pre>(.*?)</pre>", dp_page, flags=re.DOTALL)
    assert yaml.safe_load(unescape(block)) == dp_metrics()["config"]


def test_page_refers_to_no_network_resource(dp_page):
    """Nothing is fetched when the page opens: no tag loads a URL, no CSS imports one.

    The inline SVGs keep their ``xmlns`` declarations (namespace names, which browsers never
    fetch); matplotlib's Dublin Core metadata, the other source of URLs, is stripped by
    `figure_to_svg`. So every ``http(s)://`` left must be exactly an SVG/XLink ``xmlns`` value.
    """
    parser = parse(dp_page)
    links = [value for name, value in parser.attributes if name in {"src", "href", "xlink:href"}]
    assert links, "the SVG markers are referenced by local #ids"
    assert all(value.startswith("#") for value in links)
    for tag in ("<script", "<link", "<img", "<iframe", "<object", "<embed", "@import", "url(http"):
        assert tag not in dp_page.lower()
    urls = re.findall(r"https?://", dp_page)
    declarations = re.findall(r'\sxmlns(?::\w+)?="(https?://[^"]*)"', dp_page)
    assert len(urls) == len(declarations)
    assert set(declarations) == {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}


def test_every_string_from_metrics_is_escaped():
    markup = "<script>alert('x')</script>"
    metrics = dp_metrics()
    metrics["config"]["name"] = markup
    metrics["config"]["note"] = markup
    metrics["final"]["claim"] = markup
    metrics["clients"][0]["name"] = markup
    metrics["rounds"][0]["seconds"] = markup
    page = render_report(metrics, generated_at=WHEN)
    parse(page)
    assert "<script" not in page
    assert "<title>veil report: &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;</title>" in page
    assert page.count("&lt;script&gt;") >= 5


def test_run_in_progress_shows_latest_round_and_no_claim_yet():
    metrics = dp_metrics()
    metrics["final"] = None
    page = render_report(metrics, generated_at=WHEN)
    parse(page)
    assert "<strong>Run in progress.</strong>" in page
    assert "<h2>After round 3 (in progress)</h2>" in page
    assert summary(page) == {
        "Accuracy": "0.8300",
        "Loss": "0.1667",
        "ε": "1.200",
        "δ": "—",
        "Rounds": "3",
    }
    assert 'id="veil-global-accuracy"' not in page


def test_run_with_zero_rounds_and_nothing_else():
    page = render_report({"config": {}, "rounds": [], "final": None}, generated_at=WHEN)
    parse(page)
    assert "<p>No rounds completed yet.</p>" in page
    assert "<svg" not in page
    assert "<h2>Rounds</h2>" not in page
    assert "<h2>Clients" not in page
    assert "<h1>veil report: unnamed run</h1>" in page
    assert "<p>No config recorded.</p>" in page


def test_finished_run_without_claim_or_clients():
    metrics = plain_metrics()
    del metrics["clients"]
    metrics["final"]["claim"] = ""
    page = render_report(metrics, generated_at=WHEN)
    assert '<p class="claim pending">This run recorded no privacy claim.</p>' in page
    assert "<h2>Clients" not in page
    assert page.count("<svg") == 1


def test_sections_are_appended_before_the_config():
    sections = [
        ReportSection("Membership <inference>", "<p>AUC 0.51</p>"),
        ReportSection("Audit", "<p>ε ≥ 0.3</p>"),
    ]
    page = render_report(plain_metrics(), sections, generated_at=WHEN)
    first = page.index("<h2>Membership &lt;inference&gt;</h2>\n<p>AUC 0.51</p>")
    assert page.index("<h2>Rounds</h2>") < first < page.index("<h2>Audit</h2>")
    assert page.index("<h2>Audit</h2>") < page.index("<h2>Run config</h2>")


def test_report_section_is_frozen():
    section = ReportSection("Audit", "<p></p>")
    with pytest.raises(AttributeError):
        section.title = "changed"


def test_default_date_is_now_in_utc():
    page = render_report({"rounds": []})
    assert f'<p class="date">{datetime.now(UTC):%Y-%m-%d}' in page


def test_write_report_writes_the_rendered_page_atomically(tmp_path):
    path = tmp_path / "out" / "report.html"
    sections = [ReportSection("Audit", "<p>ok</p>")]
    metrics = {"config": {"name": "quick"}, "rounds": [], "final": plain_metrics()["final"]}
    write_report(metrics, path, sections, generated_at=WHEN)
    expected = render_report(metrics, sections, generated_at=WHEN)
    assert path.read_text(encoding="utf-8") == expected
    assert os.listdir(path.parent) == ["report.html"]


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ([], "metrics must be a JSON object (a dict), not list"),
        ({"config": [1]}, "metrics 'config' must be a JSON object or absent"),
        ({"final": [1]}, "metrics 'final' must be a JSON object, or null while the run"),
        ({"rounds": {"round": 1}}, "metrics 'rounds' must be a JSON array of objects"),
        ({"clients": ["north"]}, "metrics 'clients' must be a JSON array of objects"),
    ],
)
def test_wrong_json_kinds_raise_config_error(metrics, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        render_report(metrics)


def test_render_page_is_a_self_contained_page_of_its_sections():
    from veil.report.html import render_page

    page = render_page("trade-off <table>", [ReportSection("Rows & more", "<table></table>")])
    assert page.startswith("<!DOCTYPE html>")
    assert "<h1>trade-off &lt;table&gt;</h1>" in page
    assert "<h2>Rows &amp; more</h2>" in page and "<table></table>" in page
    assert "http" not in page.replace("http://www.w3.org", "")
