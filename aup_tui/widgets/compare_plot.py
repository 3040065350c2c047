"""Several experiments' best-so-far curves on one plot: one colour each, a y-axis and a legend.

A step line per series over job order (the n-th finished job), drawn with box characters so that
curves of different colours stay apart where they cross (braille dots of two colours cannot share
a cell). The score plot draws one experiment; this one compares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import RenderableType
from rich.text import Text
from textual.widget import Widget

from .colors import on_theme_change, theme_colors

__all__ = ["CompareSeries", "ComparePlot", "SERIES_COLORS", "series_color"]

#: the theme variables a series is coloured with, in order (then round again)
SERIES_COLORS = ("plot-point", "plot-best", "status-finished", "status-failed", "status-stopped", "accent")


def fmt_axis(value: float) -> str:
    """A number short enough for an axis label."""
    return f"{value:.4g}"


def series_color(colors: dict[str, str], index: int) -> str:
    return colors.get(SERIES_COLORS[index % len(SERIES_COLORS)], "white")


@dataclass(frozen=True)
class CompareSeries:
    """One experiment's curve: its legend label and best score after each finished job."""

    label: str
    values: tuple[float, ...]


def step_rows(values: Sequence[float], width: int, n_max: int) -> list[float | None]:
    """The value under each of `width` columns when `n_max` jobs span the width (None: past the end)."""
    cols: list[float | None] = []
    for x in range(width):
        i = (x * n_max) // width if width else 0
        cols.append(values[i] if i < len(values) else None)
    return cols


class ComparePlot(Widget):
    """Best-so-far curves of several experiments (`series`), with a y-axis and a legend line."""

    DEFAULT_CSS = """
    ComparePlot {
        height: 1fr;
        min-height: 6;
    }
    """

    def __init__(
        self,
        series: Sequence[CompareSeries] = (),
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.series = list(series)

    def on_mount(self) -> None:
        on_theme_change(self, self.refresh)

    def set_series(self, series: Sequence[CompareSeries]) -> None:
        self.series = list(series)
        self.refresh()

    def render(self) -> RenderableType:
        width, height = self.content_size.width, self.content_size.height
        colors = theme_colors(self.app)
        axis = colors.get("plot-axis", "grey50")
        drawn = [s for s in self.series if s.values]
        if not drawn:
            return Text("no finished jobs with a score to plot", style=axis)
        values = [v for s in drawn for v in s.values]
        lo, hi = min(values), max(values)
        if hi == lo:
            lo, hi = lo - 0.5, hi + 0.5
        labels = (fmt_axis(hi), fmt_axis((hi + lo) / 2), fmt_axis(lo))
        left = max(len(t) for t in labels) + 1
        plot_w, plot_h = max(1, width - left - 1), max(2, height - 3)  # x-axis, its labels, legend
        n_max = max(len(s.values) for s in drawn)
        grid: list[list[tuple[str, str]]] = [[(" ", "")] * plot_w for _ in range(plot_h)]

        def row_of(v: float) -> int:
            return plot_h - 1 - round((v - lo) / (hi - lo) * (plot_h - 1))

        for index, s in enumerate(drawn):
            style = series_color(colors, index)
            prev: int | None = None
            for x, v in enumerate(step_rows(s.values, plot_w, n_max)):
                if v is None:
                    break
                row = row_of(v)
                if prev is not None and prev != row:  # a new best: a riser in this column
                    step = 1 if row > prev else -1
                    for r in range(prev, row, step):
                        grid[r][x] = ("│", style)
                    grid[prev][x] = ("╯" if row < prev else "╮", style)
                    grid[row][x] = ("╭" if row < prev else "╰", style)
                else:
                    grid[row][x] = ("─", style)
                prev = row
        text = Text(no_wrap=True, overflow="crop")
        for r in range(plot_h):
            label = {0: labels[0], (plot_h - 1) // 2: labels[1], plot_h - 1: labels[2]}.get(r, "")
            text.append(label.rjust(left - 1) + " ", style=axis)
            text.append("┤" if label else "│", style=axis)
            for ch, style in grid[r]:
                text.append(ch, style=style)
            text.append("\n")
        end = f"{n_max} jobs"
        text.append(" " * left + "└" + "─" * plot_w + "\n", style=axis)
        text.append(" " * left + "1".ljust(max(0, plot_w - len(end) + 1)) + end + "\n", style=axis)
        text.append(" " * left)
        for index, s in enumerate(drawn):
            text.append(" ━━ ", style=f"bold {series_color(colors, index)}")
            text.append(s.label)
        return text
