"""The score plot: every finished job's score as a dot and the best-so-far as a line, over the
order in which jobs finished, drawn with braille characters (2×4 dots a cell).

The y axis turns logarithmic when every score is positive and they span more than two decades
(as loss-like scores do), so the best-so-far line does not lie flat on the floor.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

from rich.text import Text
from textual.widget import Widget

from .colors import fmt_score, theme_colors

# braille dot bits by (x, y) inside a cell
_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


class BrailleCanvas:
    """A width×height cell grid of 2×4 dots in two layers (points, line)."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.points = [[0] * width for _ in range(height)]
        self.line = [[0] * width for _ in range(height)]

    def dot(self, x: int, y: int, layer: str = "points") -> None:
        """Set dot (x, y); y = 0 is the top."""
        if 0 <= x < self.width * 2 and 0 <= y < self.height * 4:
            grid = self.points if layer == "points" else self.line
            grid[y // 4][x // 2] |= _BITS[x % 2][y % 4]

    def vline(self, x: int, y0: int, y1: int, layer: str = "line") -> None:
        for y in range(min(y0, y1), max(y0, y1) + 1):
            self.dot(x, y, layer)

    def rows(self, point_style: str, line_style: str) -> list[Text]:
        out = []
        for r in range(self.height):
            t = Text(no_wrap=True)
            run: list[str] = []
            run_style = ""
            for p, l in zip(self.points[r], self.line[r]):
                style = line_style if l else point_style if p else ""
                if style != run_style and run:
                    t.append("".join(run), style=run_style)
                    run = []
                run_style = style
                run.append(chr(0x2800 | p | l) if p or l else " ")
            if run:
                t.append("".join(run), style=run_style)
            out.append(t)
        return out


class ScorePlot(Widget):
    """Plots `scores` (finishing order) and `best` (best so far after each); set with `set_data`.

    Redraws at most every `MIN_REDRAW` seconds: a plot of thousands of jobs needs no 20 fps.
    """

    MIN_REDRAW = 0.5

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.scores: Sequence[float] = []
        self.best: Sequence[float] = []
        self.maximize = True
        self.best_jid: int | None = None
        self._last_draw = 0.0
        self._pending = None

    def set_data(self, scores: Sequence[float], best: Sequence[float], maximize: bool,
                 best_jid: int | None = None) -> None:
        """Show these scores; the sequences are read at the next redraw, not copied."""
        self.scores, self.best, self.maximize, self.best_jid = scores, best, maximize, best_jid
        wait = self.MIN_REDRAW - (time.monotonic() - self._last_draw)
        if wait <= 0 or not self.is_mounted:
            self.refresh()
        elif self._pending is None:
            self._pending = self.set_timer(wait, self._redraw)

    def _redraw(self) -> None:
        self._pending = None
        self.refresh()

    def render(self) -> Text:
        self._last_draw = time.monotonic()
        c = theme_colors(self.app)
        width, height = self.size.width, self.size.height
        axis_style = c.get("plot-axis", "grey50")
        values = [v for v in self.scores if math.isfinite(v)]
        if not values or width < 16 or height < 3:
            msg = "no finished job yet — scores appear here" if width >= 42 else "no scores yet"
            return Text(msg, style=axis_style, justify="center")
        lo, hi = min(values), max(values)
        log = lo > 0 and hi / lo > 100
        f = math.log10 if log else (lambda v: v)
        flo, fhi = f(lo), f(hi)
        if fhi == flo:
            flo, fhi = flo - 1, fhi + 1
        labels = [fmt_score(hi), fmt_score(lo)]
        lab_w = min(10, max(len(s) for s in labels))
        plot_w = max(4, width - lab_w - 1)
        plot_h = max(1, height - 1)
        canvas = BrailleCanvas(plot_w, plot_h)
        n = len(self.scores)
        dots_w, dots_h = plot_w * 2, plot_h * 4

        def xpos(i: int) -> int:
            return 0 if n <= 1 else round(i * (dots_w - 1) / (n - 1))

        def ypos(v: float) -> int:
            frac = (f(v) - flo) / (fhi - flo)
            return round((1 - frac) * (dots_h - 1))

        prev_y = None
        for i, (s, b) in enumerate(zip(self.scores, self.best)):
            if not (math.isfinite(s) and math.isfinite(b)):
                continue
            px, py = xpos(i), ypos(s)
            for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):  # a 2×2 dot mark: visible, still fine
                canvas.dot(min(px + dx, dots_w - 1), min(py + dy, dots_h - 1), "points")
            by = ypos(b)
            x0 = xpos(i)
            x1 = xpos(i + 1) if i + 1 < n else x0
            if prev_y is not None and prev_y != by:
                canvas.vline(x0, prev_y, by)
            for x in range(x0, max(x0, x1) + 1):
                canvas.dot(x, by, "line")
            prev_y = by
        rows = canvas.rows(c.get("plot-point", "cyan"), f"bold {c.get('plot-best', 'yellow')}")
        out = []
        for r, row in enumerate(rows):
            if r == 0:
                label = labels[0]
            elif r == plot_h - 1:
                label = labels[1]
            elif log and r == plot_h // 2 and plot_h >= 5:
                label = "log"
            else:
                label = ""
            line = Text(label[:lab_w].rjust(lab_w) + "┤" if label else " " * lab_w + "│", style=axis_style)
            line.append_text(row)
            out.append(line)
        goal = "max" if self.maximize else "min"
        best_txt = f" best {fmt_score(self.best[-1])}" if self.best else ""
        legend = Text(" " * lab_w + "└", style=axis_style)
        legend.append("•", style=c.get("plot-point", "cyan"))
        legend.append(" score ", style=axis_style)
        legend.append("━", style=f"bold {c.get('plot-best', 'yellow')}")
        legend.append(f" best-so-far ({goal}){best_txt}  {n} jobs →{'  log y' if log else ''}", style=axis_style)
        legend.truncate(width, overflow="ellipsis")
        out.append(legend)
        return Text("\n").join(out)
