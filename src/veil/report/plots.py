"""Figures of a run's metrics, rendered to SVG strings that inline into a self-contained HTML page.

Figures are built on `matplotlib.figure.Figure` directly, never through ``pyplot``: nothing is
registered in pyplot's global figure list, no GUI backend is selected, and a user's own pyplot
state (current figure, backend, interactive mode) is untouched. Saving with ``format="svg"`` uses
matplotlib's vector SVG canvas, so no raster backend is involved either.

Each function takes the plain lists of dicts found in ``metrics.json`` (see `veil.report`),
reads only the keys it plots and ignores any others; a missing or ``null`` value is a gap.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from veil.errors import ConfigError

MARKER_LIMIT = 60
"""Up to this many rounds each point gets a marker; beyond it only the line is drawn."""

LABELLED_CLIENT_LIMIT = 30
"""Up to this many clients each gets its own bar, labelled with its name (`client_accuracy_svg`)."""

_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}
_ACCURACY_COLOR = "#1f77b4"
_LOSS_COLOR = "#d62728"
_EPSILON_COLOR = "#9467bd"


def figure_to_svg(figure: Figure, *, id_salt: str) -> str:
    """Render ``figure`` as one ``<svg>...</svg>`` element, ready to paste into HTML.

    The XML declaration and DOCTYPE are dropped (they are not allowed inside HTML), and the
    Dublin Core ``<metadata>`` block is not written, so the only URLs left are the SVG and XLink
    ``xmlns`` namespace names, which are identifiers that no viewer fetches. Text stays ``<text>``
    (``svg.fonttype: none``), which keeps the file small and searchable. Element ids are hashed
    with ``id_salt``: the output is deterministic, and figures with different salts can share a
    page without id clashes.
    """
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": id_salt}):
        figure.savefig(buffer, format="svg", metadata=_NO_METADATA)
    document = buffer.getvalue()
    return document[document.index("<svg") :]


def accuracy_loss_svg(rounds: Sequence[Mapping[str, Any]]) -> str:
    """Accuracy and loss of the global model after each round, as two side-by-side panels.

    The lines carry the SVG ids ``veil-accuracy`` and ``veil-loss``.
    """
    x = _round_numbers(rounds)
    figure = Figure(figsize=(8, 3))
    accuracy_axes, loss_axes = figure.subplots(
        1, 2, sharex=True, gridspec_kw=_margins(left=0.08, bottom=0.17, top=0.9, wspace=0.22)
    )
    _plot_series(accuracy_axes, x, _series(rounds, "accuracy"), "veil-accuracy", _ACCURACY_COLOR)
    accuracy_axes.set(title="Accuracy (global model, test rows)", xlabel="round")
    _plot_series(loss_axes, x, _series(rounds, "loss"), "veil-loss", _LOSS_COLOR)
    loss_axes.set(title="Loss", xlabel="round")
    return figure_to_svg(figure, id_salt="veil-accuracy-loss")


def epsilon_svg(rounds: Sequence[Mapping[str, Any]], delta: float | None = None) -> str:
    """Privacy spent, ε, after each round (the line has the SVG id ``veil-epsilon``).

    ε is cumulative: it is what the ledger reports for all releases up to that round, at the run's
    ``delta`` (named in the title when given).
    """
    x = _round_numbers(rounds)
    figure = Figure(figsize=(8, 2.6))
    axes = figure.subplots(gridspec_kw=_margins(left=0.1, bottom=0.2, top=0.88))
    _plot_series(axes, x, _series(rounds, "epsilon"), "veil-epsilon", _EPSILON_COLOR)
    title = "Privacy spent, ε" if delta is None else f"Privacy spent, ε at δ = {delta:g}"
    axes.set(title=title, xlabel="round", ylabel="ε")
    axes.set_ylim(bottom=0)
    return figure_to_svg(figure, id_salt="veil-epsilon")


def client_accuracy_svg(
    clients: Sequence[Mapping[str, Any]], global_accuracy: float | None = None
) -> str:
    """Each client's accuracy, sorted from highest to lowest, as a bar chart.

    Up to `LABELLED_CLIENT_LIMIT` clients, each is its own bar labelled with its name (bar ``i``
    in sorted order has the SVG id ``veil-client-bar-i``). Beyond that, names would overlap and
    thousands of bar elements are slow, so the sorted accuracies are drawn as one filled step
    outline (SVG id ``veil-client-bars``), which looks the same at that density. The global
    model's accuracy, when given, is a dashed horizontal line (SVG id ``veil-global-accuracy``).
    Clients without an accuracy are left out.
    """
    scored = [
        (str(client.get("name", f"client {index}")), value)
        for index, client in enumerate(clients)
        if not math.isnan(value := _number(client.get("accuracy"), "accuracy", f"client {index}"))
    ]
    scored.sort(key=lambda pair: pair[1], reverse=True)
    figure = Figure(figsize=(8, 3), layout="constrained")
    axes = figure.subplots()
    if len(scored) <= LABELLED_CLIENT_LIMIT:
        _draw_labelled_bars(axes, scored)
    else:
        _draw_bar_outline(axes, [value for _, value in scored])
    title = "Accuracy per client (local test rows)"
    if global_accuracy is not None:
        line = axes.axhline(global_accuracy, color="black", linestyle="--", linewidth=1, zorder=3)
        line.set_gid("veil-global-accuracy")
        title += f"; dashed: global model, {global_accuracy:.3f}"
    axes.set(title=title, ylabel="accuracy")
    axes.set_ylim(bottom=0)
    return figure_to_svg(figure, id_salt="veil-client-accuracy")


def _draw_labelled_bars(axes: Axes, scored: list[tuple[str, float]]) -> None:
    """One bar per ``(name, accuracy)``, named on the x axis (names are plain text, not TeX)."""
    positions = range(len(scored))
    bars = axes.bar(positions, [value for _, value in scored], color=_ACCURACY_COLOR, width=0.8)
    for index, bar in enumerate(bars):
        bar.set_gid(f"veil-client-bar-{index}")
    names = [name for name, _ in scored]
    axes.set_xticks(positions, names, rotation=45, ha="right", parse_math=False)
    axes.set_xlabel("client, sorted by accuracy")


def _draw_bar_outline(axes: Axes, values: list[float]) -> None:
    """The sorted ``values`` as one filled step outline, bar ``i`` spanning ``[i - ½, i + ½]``."""
    edges = [index - 0.5 for index in range(len(values) + 1)]
    outline = axes.stairs(values, edges, fill=True, color=_ACCURACY_COLOR)
    outline.set_gid("veil-client-bars")
    axes.set_xticks([])
    axes.set_xlabel(f"{len(values)} clients, sorted by accuracy")


def _margins(**fractions: float) -> dict[str, float]:
    """Fixed subplot margins (figure fractions) for the line figures.

    Their labels are short numbers and fixed titles, so fixed margins fit, and they skip the
    extra layout pass of ``layout="constrained"``, which doubles the render time. The client
    chart keeps constrained layout because client names can be of any length.
    """
    return {"right": 0.98, **fractions}


def _plot_series(axes: Axes, x: list[float], y: list[float], gid: str, color: str) -> None:
    """Draw ``y`` against round numbers ``x`` as one line; ``nan`` values are gaps."""
    marker = "o" if len(x) <= MARKER_LIMIT else None
    (line,) = axes.plot(x, y, color=color, marker=marker, markersize=3)
    line.set_gid(gid)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)


def _round_numbers(rounds: Sequence[Mapping[str, Any]]) -> list[float]:
    """The ``round`` of each entry, or its 1-based position where an entry has none."""
    return [
        _number(entry.get("round", index), "round", f"round entry {index}")
        for index, entry in enumerate(rounds, start=1)
    ]


def _series(rounds: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """The values of ``key`` across rounds, ``nan`` where missing or ``null``."""
    return [
        _number(entry.get(key), key, f"round entry {index}")
        for index, entry in enumerate(rounds, start=1)
    ]


def _number(value: Any, key: str, where: str) -> float:
    """``value`` as a float (``nan`` for ``None``); `ConfigError` naming ``key`` if not a number."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"metrics {where} has {key}={value!r}; expected a number or null — "
            "pass the metrics.json written by `veil run`"
        )
    return float(value)
