"""A job's intermediate results as a curve in braille dots: a picture of how training went."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import RenderableType
from rich.style import Style
from rich.text import Text
from textual.widget import Widget

# Braille dot bits by (row 0-3, column 0-1) inside one character cell.
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))


def fmt(value: float) -> str:
    """A number short enough for an axis label."""
    return f"{value:.4g}"


def braille_rows(values: Sequence[float], width: int, height: int, lo: float, hi: float) -> list[str]:
    """`values` drawn as a connected line on a `width`×`height` cell canvas (2×4 dots a cell)."""
    if width <= 0 or height <= 0:
        return []
    xdots, ydots = width * 2, height * 4
    grid = [[0] * width for _ in range(height)]
    span = hi - lo or 1.0

    def point(i: int) -> tuple[int, int]:
        x = 0 if len(values) == 1 else round(i * (xdots - 1) / (len(values) - 1))
        y = round((hi - values[i]) / span * (ydots - 1))
        return x, min(max(y, 0), ydots - 1)

    def dot(x: int, y: int) -> None:
        grid[y // 4][x // 2] |= _DOTS[y % 4][x % 2]

    prev = point(0)
    dot(*prev)
    for i in range(1, len(values)):
        cur = point(i)
        _line(prev, cur, dot)
        prev = cur
    return ["".join(chr(0x2800 + bits) if bits else " " for bits in row) for row in grid]


def _line(a: tuple[int, int], b: tuple[int, int], dot) -> None:
    """Bresenham's line from a to b."""
    (x0, y0), (x1, y1) = a, b
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    while True:
        dot(x0, y0)
        if x0 == x1 and y0 == y1:
            return
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            x0 += sx
        if e2 <= dx:
            err += dx
            y0 += sy


class ResultCurve(Widget):
    """Plots the first value of each intermediate result; the legend names every value.

    Given state through `set_results`; reads nothing itself.
    """

    COMPONENT_CLASSES = {
        "result-curve--line",
        "result-curve--axis",
        "result-curve--legend",
        "result-curve--empty",
    }

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._results: list[tuple[float, ...]] = []
        self._labels: list[str] = []

    @property
    def results(self) -> list[tuple[float, ...]]:
        return list(self._results)

    def set_results(self, results: Sequence[Sequence[float]], labels: Sequence[str] = ()) -> None:
        """Show these results (oldest first); `labels` name the values (the first is the score)."""
        new = [tuple(float(v) for v in r) for r in results if len(r)]
        if new == self._results and list(labels) == self._labels:
            return
        self._results = new
        self._labels = list(labels)
        self.refresh()

    def _label(self, i: int) -> str:
        """Value `i`'s name. Auptimizer's `multi_res_labels` name the values after the score
        (`#Auptimizer:0.9,0.7` with labels `["accuracy"]`); when no result has more values than
        there are labels, they name all of them (the export's columns follow the same rule)."""
        widest = max((len(r) for r in self._results), default=0)
        at = i - (1 if self._labels and widest > len(self._labels) else 0)
        if 0 <= at < len(self._labels) and self._labels[at]:
            return self._labels[at]
        return "score" if i == 0 else f"value {i + 1}"

    def render(self) -> RenderableType:
        width, height = self.content_size
        if not self._results:
            return Text(
                "no intermediate results yet", style=self.get_component_rich_style("result-curve--empty")
            )
        values = [r[0] for r in self._results]
        legend_style = self.get_component_rich_style("result-curve--legend")
        last = self._results[-1]
        legend = Text(no_wrap=True, overflow="ellipsis")
        legend.append(f"{self._label(0)} {fmt(last[0])}", style=legend_style + Style(bold=True))
        for i, value in enumerate(last[1:], start=1):
            legend.append(f"  {self._label(i)} {fmt(value)}", style=legend_style)
        legend.append(f"  ({len(values)} pts)", style=legend_style)
        plot_height = height - 1
        if plot_height < 1:
            return legend
        lo, hi = min(values), max(values)
        if lo == hi:
            lo, hi = lo - 1, hi + 1
        top, bottom = fmt(hi), fmt(lo)
        gutter = max(len(top), len(bottom))
        plot_width = width - gutter - 1
        if plot_width < 2:
            return legend
        axis_style = self.get_component_rich_style("result-curve--axis")
        line_style = self.get_component_rich_style("result-curve--line")
        rows = braille_rows(values, plot_width, plot_height, lo, hi)
        out = Text(no_wrap=True, overflow="crop")
        out.append_text(legend)
        for r, row in enumerate(rows):
            out.append("\n")
            if r == 0:
                out.append(top.rjust(gutter) + "┤", style=axis_style)
            elif r == len(rows) - 1:
                out.append(bottom.rjust(gutter) + "┤", style=axis_style)
            else:
                out.append(" " * gutter + "│", style=axis_style)
            out.append(row, style=line_style)
        return out
