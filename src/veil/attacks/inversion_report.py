"""Report pieces shared by the inversion attacks: a grid of images as inline SVG, and a section.

Images are drawn with ``axes.imshow`` on a `matplotlib.figure.Figure` (never pyplot), in grey
on one fixed value range so that rows can be compared; a feature vector ``(d,)`` is drawn as a
1×d strip. Every string that reaches the HTML is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from matplotlib.figure import Figure
from torch import Tensor

from veil.report import ReportSection, figure_to_svg
from veil.report.html import table_html

CELL_INCHES = 0.8
"""Width and height of one image in the grid."""


def image_grid_svg(
    rows: Sequence[tuple[str, Tensor]],
    column_titles: Sequence[str],
    value_range: tuple[float, float],
    *,
    id_salt: str,
) -> str:
    """One row of images per ``(row title, images [N, *shape])``, one column per title.

    Shapes ``(C, H, W)`` are drawn as their channel mean, ``(H, W)`` as is, ``(d,)`` as a strip.
    """
    num_columns = len(column_titles)
    figure = Figure(figsize=(1.6 + CELL_INCHES * num_columns, 0.3 + CELL_INCHES * len(rows)))
    grid = figure.subplots(len(rows), num_columns, squeeze=False)
    figure.subplots_adjust(left=1.5 / figure.get_figwidth(), right=0.99, top=0.92, bottom=0.02)
    for row, (title, images) in enumerate(rows):
        for column in range(num_columns):
            axes = grid[row][column]
            axes.set_xticks([])
            axes.set_yticks([])
            axes.imshow(
                _as_picture(images[column]),
                cmap="gray",
                vmin=value_range[0],
                vmax=value_range[1],
                aspect="auto",
            )
            if row == 0:
                axes.set_title(column_titles[column], fontsize=8)
        grid[row][0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    return figure_to_svg(figure, id_salt=id_salt)


def inversion_section(
    title: str,
    paragraphs: Sequence[str],
    svg: str,
    caption: str,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
) -> ReportSection:
    """A report section: paragraphs, the figure with its caption, then a table (all escaped)."""
    text = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    figure = f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"
    table = table_html([escape(h) for h in header], [[escape(c) for c in row] for row in rows])
    return ReportSection(title, text + figure + table)


def format_score(value: float | None, spec: str = ".1f") -> str:
    """A score for a table cell: "—" for None/NaN, "∞" for +inf."""
    if value is None or value != value:
        return "—"
    if value == float("inf"):
        return "∞"
    return format(value, spec)


def _as_picture(image: Tensor) -> Tensor:
    image = image.detach().cpu().float()
    if image.dim() == 3:
        return image.mean(0)
    if image.dim() == 1:
        return image[None]
    return image
