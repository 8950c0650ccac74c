"""Tests of veil.report.plots: valid inline SVG with the expected points and bars."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import matplotlib
import pytest
from matplotlib.figure import Figure

from veil.errors import ConfigError
from veil.report.plots import (
    LABELLED_CLIENT_LIMIT,
    MARKER_LIMIT,
    accuracy_loss_svg,
    client_accuracy_svg,
    epsilon_svg,
    figure_to_svg,
)

SVG = "{http://www.w3.org/2000/svg}"
ROUNDS = [
    {"round": r, "accuracy": 0.5 + r / 20, "loss": 1 / r, "epsilon": 0.3 * r, "seconds": 0.1}
    for r in range(1, 6)
]


def parse(svg: str) -> ET.Element:
    """The SVG's root element, after checking that it can be pasted into HTML as is."""
    assert svg.startswith("<svg")
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def element(root: ET.Element, gid: str) -> ET.Element:
    (found,) = [node for node in root.iter() if node.get("id") == gid]
    return found


def markers(root: ET.Element, gid: str) -> int:
    """How many data-point markers the line with SVG id ``gid`` draws."""
    return len(list(element(root, gid).iter(f"{SVG}use")))


def texts(root: ET.Element) -> list[str]:
    return [node.text for node in root.iter(f"{SVG}text")]


def test_figure_to_svg_strips_prolog_and_metadata_and_is_deterministic():
    figure = Figure()
    figure.subplots().plot([1, 2], [3, 4])
    svg = figure_to_svg(figure, id_salt="a")
    root = parse(svg)
    assert "<?xml" not in svg
    assert "DOCTYPE" not in svg
    assert root.find(f"{SVG}metadata") is None
    assert set(re.findall(r"https?://[^\"]*", svg)) == {
        "http://www.w3.org/2000/svg",  # xmlns: a namespace name, never fetched
        "http://www.w3.org/1999/xlink",  # xmlns:xlink, likewise
    }
    assert figure_to_svg(figure, id_salt="a") == svg
    assert figure_to_svg(figure, id_salt="b") != svg


def test_figures_leave_pyplot_and_rc_params_alone():
    import matplotlib.pyplot as plt

    figures_before = plt.get_fignums()
    rc_before = dict(matplotlib.rcParams)
    accuracy_loss_svg(ROUNDS)
    client_accuracy_svg([{"name": "a", "accuracy": 0.5}], 0.6)
    assert plt.get_fignums() == figures_before
    assert dict(matplotlib.rcParams) == rc_before


def test_accuracy_loss_has_one_marker_per_round():
    root = parse(accuracy_loss_svg(ROUNDS))
    assert markers(root, "veil-accuracy") == len(ROUNDS)
    assert markers(root, "veil-loss") == len(ROUNDS)
    assert {"Loss", "Accuracy (global model, test rows)"} <= set(texts(root))


def test_missing_and_null_values_are_gaps():
    rounds = [{"round": 1, "accuracy": 0.5, "loss": 1.0}, {"round": 2, "accuracy": None}, {}]
    root = parse(accuracy_loss_svg(rounds))
    assert markers(root, "veil-accuracy") == 1
    assert markers(root, "veil-loss") == 1


def test_many_rounds_draw_lines_without_markers():
    rounds = [{"round": r, "accuracy": 0.9, "loss": 0.1} for r in range(1, MARKER_LIMIT + 2)]
    root = parse(accuracy_loss_svg(rounds))
    assert markers(root, "veil-accuracy") == 0
    assert element(root, "veil-accuracy").find(f"{SVG}path") is not None


def test_zero_rounds_still_renders():
    root = parse(accuracy_loss_svg([]))
    assert markers(root, "veil-accuracy") == 0


def test_epsilon_plots_non_null_points_and_names_delta():
    rounds = [{"round": 1, "epsilon": None}, *ROUNDS[1:]]
    root = parse(epsilon_svg(rounds, delta=1e-5))
    assert markers(root, "veil-epsilon") == len(ROUNDS) - 1
    assert "Privacy spent, ε at δ = 1e-05" in texts(root)
    assert "Privacy spent, ε" in texts(parse(epsilon_svg(ROUNDS)))


def bar_heights(root: ET.Element, count: int) -> list[float]:
    """Heights of bars ``veil-client-bar-0..count-1`` from their ``M x y0 L ... L x y1`` paths."""
    heights = []
    for index in range(count):
        path = element(root, f"veil-client-bar-{index}").find(f"{SVG}path").get("d")
        ys = [float(y) for y in re.findall(r"[ML] [-\d.]+ ([-\d.]+)", path)]
        heights.append(max(ys) - min(ys))
    return heights


def test_client_bars_are_sorted_labelled_and_show_the_global_line():
    clients = [
        {"name": "low", "accuracy": 0.4},
        {"name": "high", "accuracy": 0.9},
        {"name": "unscored"},
        {"name": "mid", "accuracy": 0.7, "num_train": 10},
    ]
    root = parse(client_accuracy_svg(clients, global_accuracy=0.8))
    bars = [node for node in root.iter() if node.get("id", "").startswith("veil-client-bar-")]
    assert len(bars) == 3
    heights = bar_heights(root, 3)
    assert heights == sorted(heights, reverse=True)
    assert heights[2] / heights[0] == pytest.approx(0.4 / 0.9, rel=1e-3)
    labels = [text for text in texts(root) if text in {"low", "high", "mid"}]
    assert labels == ["high", "mid", "low"]
    element(root, "veil-global-accuracy")
    assert "Accuracy per client (local test rows); dashed: global model, 0.800" in texts(root)


def test_client_names_are_plain_text_not_markup_or_tex():
    names = ["<script>alert(1)</script>", "$\\frac{", "a & b"]
    svg = client_accuracy_svg([{"name": name, "accuracy": 0.5} for name in names])
    assert "<script>" not in svg
    assert set(names) <= set(texts(parse(svg)))


def test_without_global_accuracy_there_is_no_line():
    root = parse(client_accuracy_svg([{"name": "a", "accuracy": 0.5}]))
    assert not [node for node in root.iter() if node.get("id") == "veil-global-accuracy"]


def test_many_clients_are_one_step_outline_with_one_bar_per_client():
    count = LABELLED_CLIENT_LIMIT + 10
    clients = [{"name": f"c{i}", "accuracy": i / count} for i in range(count)]
    svg = client_accuracy_svg(clients, global_accuracy=0.5)
    root = parse(svg)
    assert "veil-client-bar-0" not in svg
    assert "c0" not in texts(root)
    path = element(root, "veil-client-bars").find(f"{SVG}path").get("d")
    bar_edges = {x for x in re.findall(r"[ML] ([-\d.]+) [-\d.]+", path)}
    assert len(bar_edges) == count + 1
    assert f"{count} clients, sorted by accuracy" in texts(root)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: accuracy_loss_svg([{"round": 1, "loss": "high"}]), "round entry 1 has loss="),
        (lambda: epsilon_svg([{"round": "one"}]), "round entry 1 has round='one'"),
        (lambda: client_accuracy_svg([{"accuracy": True}]), "client 0 has accuracy=True"),
    ],
)
def test_non_numeric_values_raise_config_error(call, message):
    with pytest.raises(ConfigError, match=re.escape(message) + ".*expected a number or null"):
        call()
