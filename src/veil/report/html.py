"""A run's report as one self-contained HTML page.

The page opens offline and can be mailed as a single file: styles are inline CSS, figures are
inline SVG (`veil.report.plots`), and nothing refers to a network resource (no external CSS,
scripts, fonts or images). Every string taken from the metrics or the run config is escaped with
`html.escape`, so a run named ``<script>...`` shows as text.

Top to bottom: the run name and date, the privacy claim in a box, the final accuracy / loss /
ε / δ, the figures, the per-client and per-round tables, any extra `ReportSection` (attack
results, audits, ...), and the run config as YAML.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any

import yaml

from veil.errors import check
from veil.report.metrics_file import write_text_atomic
from veil.report.plots import accuracy_loss_svg, client_accuracy_svg, epsilon_svg

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330;
       max-width: 60rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #d8dce4; }
.date { color: #5d6675; margin-top: 0; }
.claim { border: 2px solid #2f6fde; background: #eef4ff; border-radius: 6px;
         padding: 0.9rem 1.1rem; font-size: 1.15rem; }
.claim.pending { border-color: #b7791f; background: #fff8e6; }
.summary { display: flex; flex-wrap: wrap; gap: 0.8rem; padding: 0; list-style: none; }
.summary li { border: 1px solid #d8dce4; border-radius: 6px; padding: 0.5rem 0.9rem; }
.summary .label { display: block; color: #5d6675; font-size: 0.85rem; }
.summary .value { font-size: 1.3rem; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0; } figure svg { max-width: 100%; height: auto; }
.scroll { max-height: 28rem; overflow: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 0.25rem 0.8rem; border-bottom: 1px solid #e6e9ef; text-align: right; }
th { position: sticky; top: 0; background: #fff; }
th:first-child, td:first-child { text-align: left; }
pre { background: #f5f6f8; padding: 0.8rem; overflow: auto; }
"""

_MISSING = "—"

_Entries = Sequence[Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class ReportSection:
    """An extra section appended to the report, e.g. attack results or an audit.

    ``title`` is escaped; ``html`` is inserted verbatim, so whoever builds it must escape the
    strings it contains and keep it self-contained (inline SVG from
    `veil.report.figure_to_svg`, no links to network resources).
    """

    title: str
    html: str


def render_report(
    metrics: Mapping[str, Any],
    sections: Sequence[ReportSection] = (),
    *,
    generated_at: datetime | None = None,
) -> str:
    """The HTML page for a run's ``metrics`` (the ``metrics.json`` schema of ``veil run``).

    ``metrics`` needs none of its keys: a run in progress (``final`` null) shows its latest
    round and says that the claim comes when it finishes, and a run with no rounds yet shows
    no figures. Unknown keys are ignored. ``generated_at`` (default: now) is the date shown under
    the title. Raises `ConfigError` if a key holds the wrong kind of JSON value.
    """
    config, rounds, final, clients = _parts(metrics)
    name = str(config.get("name") or "unnamed run")
    body = [
        _claim_box(final),
        _summary(final, rounds),
        _figures(rounds, final, clients),
        _clients_table(clients),
        _rounds_table(rounds),
        *(_section(escape(section.title), section.html) for section in sections),
        _section("Run config", _config_block(config)),
    ]
    return _page(f"veil report: {name}", body, generated_at)


def render_page(
    title: str, sections: Sequence[ReportSection], *, generated_at: datetime | None = None
) -> str:
    """A self-contained page of ``sections`` under ``title`` (e.g. the trade-off table)."""
    body = [_section(escape(section.title), section.html) for section in sections]
    return _page(title, body, generated_at)


def _page(title: str, body: Sequence[str], generated_at: datetime | None) -> str:
    """The HTML document: ``title`` (escaped) and the date on top of the ``body`` parts."""
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M %Z").strip()
    head = [f"<h1>{escape(title)}</h1>", f'<p class="date">{escape(when)}</p>']
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        "<body>\n" + "\n".join(part for part in [*head, *body] if part) + "\n</body>\n</html>\n"
    )


def write_report(
    metrics: Mapping[str, Any],
    path: str | os.PathLike[str],
    sections: Sequence[ReportSection] = (),
    *,
    generated_at: datetime | None = None,
) -> None:
    """Render the report (see `render_report`) and write it to ``path`` atomically."""
    write_text_atomic(render_report(metrics, sections, generated_at=generated_at), path)


def _parts(
    metrics: Mapping[str, Any],
) -> tuple[Mapping[str, Any], _Entries, Mapping[str, Any] | None, _Entries]:
    """``(config, rounds, final, clients)`` from ``metrics``, checked for their JSON kinds."""
    check(
        isinstance(metrics, Mapping),
        f"metrics must be a JSON object (a dict), not {type(metrics).__name__}",
    )
    config = metrics.get("config") or {}
    rounds = metrics.get("rounds") or []
    final = metrics.get("final")
    clients = metrics.get("clients") or []
    check(isinstance(config, Mapping), "metrics 'config' must be a JSON object or absent")
    check(
        isinstance(final, Mapping | None),
        "metrics 'final' must be a JSON object, or null while the run is in progress",
    )
    for key, entries in (("rounds", rounds), ("clients", clients)):
        check(
            isinstance(entries, list | tuple)
            and all(isinstance(entry, Mapping) for entry in entries),
            f"metrics '{key}' must be a JSON array of objects",
        )
    return config, rounds, final, clients


def _claim_box(final: Mapping[str, Any] | None) -> str:
    """The privacy claim, or why there is none yet."""
    if final is None:
        return (
            '<p class="claim pending"><strong>Run in progress.</strong> The privacy claim is '
            "stated when the run finishes.</p>"
        )
    claim = final.get("claim")
    if not claim:
        return '<p class="claim pending">This run recorded no privacy claim.</p>'
    return f'<p class="claim"><strong>Privacy claim:</strong> {escape(str(claim))}</p>'


def _summary(final: Mapping[str, Any] | None, rounds: _Entries) -> str:
    """The headline numbers: final ones, or the latest round's while the run is in progress."""
    if final is None and not rounds:
        return "<p>No rounds completed yet.</p>"
    source = final if final is not None else rounds[-1]
    heading = "Final model" if final is not None else f"After round {len(rounds)} (in progress)"
    epsilon = source.get("epsilon")
    items = [
        ("Accuracy", _number(source.get("accuracy"), ".4f")),
        ("Loss", _number(source.get("loss"), ".4f")),
        ("ε", "no DP" if epsilon is None else _number(epsilon, ".3f")),
        ("δ", _number(final.get("delta") if final else None, ".3g")),
        ("Rounds", str(len(rounds))),
    ]
    cards = "".join(
        f'<li><span class="label">{label}</span><span class="value">{value}</span></li>'
        for label, value in items
    )
    return f'<h2>{heading}</h2>\n<ul class="summary">{cards}</ul>'


def _figures(rounds: _Entries, final: Mapping[str, Any] | None, clients: _Entries) -> str:
    """The figures that the data supports: none before the first round."""
    figures = []
    if rounds:
        figures.append(_figure(accuracy_loss_svg(rounds), "Accuracy and loss after each round."))
    if any(entry.get("epsilon") is not None for entry in rounds):
        delta = final.get("delta") if final else None
        caption = "Privacy spent (ε) after each round, composed by the ledger."
        figures.append(_figure(epsilon_svg(rounds, delta), caption))
    if any(client.get("accuracy") is not None for client in clients):
        global_accuracy = final.get("accuracy") if final else None
        caption = "Each client's accuracy on its own test rows, sorted."
        figures.append(_figure(client_accuracy_svg(clients, global_accuracy), caption))
    return _section("Figures", "\n".join(figures)) if figures else ""


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def _clients_table(clients: _Entries) -> str:
    """One row per client: name, train rows, test rows, accuracy."""
    if not clients:
        return ""
    rows = [
        [
            escape(str(client.get("name", _MISSING))),
            _number(client.get("num_train"), "d"),
            _number(client.get("num_test"), "d"),
            _number(client.get("accuracy"), ".4f"),
        ]
        for client in clients
    ]
    header = ["Client", "Train rows", "Test rows", "Accuracy"]
    return _section(f"Clients ({len(clients)})", table_html(header, rows))


def _rounds_table(rounds: _Entries) -> str:
    """One row per round: round, accuracy, loss, ε, seconds."""
    if not rounds:
        return ""
    rows = [
        [
            _number(entry.get("round", index), "d"),
            _number(entry.get("accuracy"), ".4f"),
            _number(entry.get("loss"), ".4f"),
            _number(entry.get("epsilon"), ".3f"),
            _number(entry.get("seconds"), ".2f"),
        ]
        for index, entry in enumerate(rounds, start=1)
    ]
    header = ["Round", "Accuracy", "Loss", "ε", "Seconds"]
    return _section("Rounds", table_html(header, rows))


def _config_block(config: Mapping[str, Any]) -> str:
    if not config:
        return "<p>No config recorded.</p>"
    text = yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)
    return f"<pre>{escape(text)}</pre>"


def table_html(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table; ``header`` and ``rows`` hold already-escaped cell HTML."""
    head = "".join(f"<th>{cell}</th>" for cell in header)
    body = "\n".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return (
        f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{body}\n</tbody>\n</table></div>"
    )


def _section(title_html: str, body_html: str) -> str:
    return f"<section>\n<h2>{title_html}</h2>\n{body_html}\n</section>"


def _number(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``; "—" for null; anything else shown as escaped text."""
    if value is None:
        return _MISSING
    if isinstance(value, bool) or not isinstance(value, int | float):
        return escape(str(value))
    if spec == "d" and isinstance(value, float):
        return format(value, "g")
    return format(value, spec)
