import math

import torch

from veil.attacks.inversion_report import format_score, image_grid_svg, inversion_section


def test_image_grid_draws_one_image_per_cell_for_images_and_vectors():
    rows = [("truth <a>", torch.rand(3, 1, 8, 8)), ("guess", torch.rand(3, 1, 8, 8))]
    svg = image_grid_svg(rows, ["x", "y", "z"], (0.0, 1.0), id_salt="test")
    assert svg.startswith("<svg") and svg.count("<image") == 6
    assert "truth &lt;a&gt;" in svg  # matplotlib escapes text it writes
    strips = image_grid_svg([("features", torch.rand(2, 30))], ["a", "b"], (-3, 3), id_salt="t")
    assert strips.count("<image") == 2


def test_inversion_section_escapes_every_string():
    section = inversion_section(
        "Title", ["<b>para</b>"], "<svg></svg>", "cap & tion", ["<h>"], [["<td>", "1"]]
    )
    assert section.title == "Title"
    assert "&lt;b&gt;para&lt;/b&gt;" in section.html
    assert "cap &amp; tion" in section.html and "&lt;h&gt;" in section.html
    assert "&lt;td&gt;" in section.html and "<svg></svg>" in section.html


def test_format_score():
    assert format_score(None) == "—"
    assert format_score(math.nan) == "—"
    assert format_score(math.inf) == "∞"
    assert format_score(12.345) == "12.3"
    assert format_score(0.5, ".0%") == "50%"
