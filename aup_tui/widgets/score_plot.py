"""The score plot: every finished job's score as a dot and the best-so-far as a line, over the
order in which jobs finished or over time since the experiment started (`x_axis`), drawn with
braille characters (2×4 dots a cell).

The y axis turns logarithmic when every score is positive and they span more than two decades
(as loss-like scores do), so the best-so-far line does not lie flat on the floor. It is labelled
(`score`, `log`), marks the highest and lowest score and round values between them (`y_ticks`),
and the legend counts the early-stopped jobs, which have no final score to plot.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from rich.text import Text
from textual.reactive import reactive
from textual.timer import Timer
from textual.widget import Widget

from .colors import fmt_score, fmt_since, on_theme_change, theme_colors

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
            for dots, trace in zip(self.points[r], self.line[r]):
                style = line_style if trace else point_style if dots else ""
                if style != run_style and run:
                    t.append("".join(run), style=run_style)
                    run = []
                run_style = style
                run.append(chr(0x2800 | dots | trace) if dots or trace else " ")
            if run:
                t.append("".join(run), style=run_style)
            out.append(t)
        return out


Y_LABEL = "score"


def _round_steps(lo: float, hi: float, count: int) -> tuple[float, int]:
    """A round step (1, 2, 2.5 or 5 × 10^k) that cuts [lo, hi] into about `count` parts, and the
    decimals its multiples need."""
    raw = (hi - lo) / max(1, count)
    exp = math.floor(math.log10(raw))
    for mantissa, extra in ((1, 0), (2, 0), (2.5, 1), (5, 0), (10, 0)):
        step = mantissa * 10.0**exp
        if step >= raw:
            return step, max(0, -exp + extra - (1 if mantissa == 10 else 0))
    return 10.0 ** (exp + 1), max(0, -exp - 1)  # not reached: 10 × 10^exp ≥ raw


def _tick_label(value: float) -> str:
    """A score as the axis shows it: as the table does when that is short, else 3 digits."""
    text = fmt_score(value)
    return text if len(text) <= 8 else f"{value:.3g}"


def y_ticks(lo: float, hi: float, rows: int, log: bool, row_of: Callable[[float], int]) -> dict[int, str]:
    """Row → label of the y axis's ticks: the highest and lowest score on the top and bottom rows,
    round values (decades on a log axis) between them, at least two rows apart."""
    if hi <= lo:  # one value: one tick, where it is drawn
        return {row_of(lo): _tick_label(lo)}
    ticks = {0: _tick_label(hi), rows - 1: _tick_label(lo)} if rows > 1 else {0: _tick_label(hi)}
    if rows < 5:
        return ticks
    count = max(1, (rows - 1) // 2)
    values: list[tuple[float, str]] = []
    if log:
        first, last = math.ceil(math.log10(lo)), math.floor(math.log10(hi))
        values = [(10.0**k, f"{10.0**k:g}") for k in range(first, last + 1)]
    else:
        step, decimals = _round_steps(lo, hi, count)
        k = math.ceil(lo / step)
        while k * step <= hi:
            v = k * step
            v = 0.0 if abs(v) < step / 2 else v
            values.append((v, f"{v:.{decimals}f}" if abs(v) < 1e5 and decimals < 6 else f"{v:.3g}"))
            k += 1
    for value, label in values:
        row = row_of(value)
        if all(abs(row - taken) >= 2 for taken in ticks):
            ticks[row] = label
    return ticks


class ScorePlot(Widget):
    """Plots `scores` (finishing order) and `best` (best so far after each); set with `set_data`.

    With `x_axis = "time"` (and `times`, when each score came, and `start`) the x axis is the time
    since the start instead of the job order. Redraws at most every `MIN_REDRAW` seconds: a plot
    of thousands of jobs needs no 20 fps.
    """

    MIN_REDRAW = 0.5
    X_AXES = ("order", "time")

    x_axis: reactive[str] = reactive("order")

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.scores: Sequence[float] = []
        self.best: Sequence[float] = []
        self.times: Sequence[float] = []
        self.start: float | None = None
        self.maximize = True
        self.early_stopped = 0  # jobs stopped early: counted in the legend, no final score to plot
        self._last_draw = 0.0
        self._drew_scores = False  # whether the last redraw had a score to plot
        self._pending: Timer | None = None

    def on_mount(self) -> None:
        on_theme_change(self, self.refresh)

    def set_data(
        self,
        scores: Sequence[float],
        best: Sequence[float],
        maximize: bool,
        times: Sequence[float] = (),
        start: float | None = None,
        early_stopped: int = 0,
    ) -> None:
        """Show these scores; the sequences are read at the next redraw, not copied."""
        self.scores, self.best, self.maximize = scores, best, maximize
        self.times, self.start, self.early_stopped = times, start, early_stopped
        wait = self.MIN_REDRAW - (time.monotonic() - self._last_draw)
        if wait <= 0 or not self.is_mounted or not self._drew_scores:  # the first scores: at once
            self.refresh()
        elif self._pending is None:
            self._pending = self.set_timer(wait, self._redraw)

    def _redraw(self) -> None:
        self._pending = None
        self.refresh()

    def next_x_axis(self) -> str:
        """Switch between job order and time; returns the axis now shown."""
        self.x_axis = self.X_AXES[(self.X_AXES.index(self.x_axis) + 1) % len(self.X_AXES)]
        return self.x_axis

    def _series(self) -> tuple[list[float], list[float], list[float] | None]:
        """(scores, best so far, x in seconds or None for job order), in the axis's order."""
        if self.x_axis != "time" or len(self.times) != len(self.scores) or not self.scores:
            return list(self.scores), list(self.best), None
        start = self.start if self.start is not None else min(self.times)
        pairs = sorted(zip(self.times, self.scores))  # store reads come in job order, not end order
        xs: list[float] = []
        scores: list[float] = []
        best: list[float] = []
        for t, v in pairs:
            if math.isfinite(v) and (
                not best or not math.isfinite(best[-1]) or (v > best[-1] if self.maximize else v < best[-1])
            ):
                best.append(v)
            else:
                best.append(best[-1] if best else v)
            xs.append(max(0.0, t - start))
            scores.append(v)
        return scores, best, xs

    def render(self) -> Text:
        self._last_draw = time.monotonic()
        c = theme_colors(self.app)
        width, height = self.size.width, self.size.height
        axis_style = c.get("plot-axis", "grey50")
        scores, bests, xs = self._series()
        values = [v for v in scores if math.isfinite(v)]
        self._drew_scores = bool(values)
        if not values or width < 16 or height < 3:
            msg = "no finished job yet — scores appear here" if width >= 42 else "no scores yet"
            return Text(msg, style=axis_style, justify="center")
        lo, hi = min(values), max(values)
        log = lo > 0 and hi / lo > 100
        f = math.log10 if log else (lambda v: v)
        flo, fhi = f(lo), f(hi)
        if fhi == flo:
            flo, fhi = flo - 1, fhi + 1
        plot_h = max(1, height - 1)
        dots_h = plot_h * 4

        def ypos(v: float) -> int:
            frac = (f(v) - flo) / (fhi - flo)
            return round((1 - frac) * (dots_h - 1))

        ticks = y_ticks(lo, hi, plot_h, log, lambda v: ypos(v) // 4)
        free = sorted((r for r in range(plot_h) if r not in ticks), key=lambda r: abs(r - (plot_h - 1) / 2))
        names = dict(zip(sorted(free[: 2 if log else 1]), [Y_LABEL, "log"] if log else [Y_LABEL]))
        lab_w = min(10, max(len(label) for label in [*ticks.values(), *names.values()]))
        plot_w = max(4, width - lab_w - 1)
        canvas = BrailleCanvas(plot_w, plot_h)
        n = len(scores)
        dots_w = plot_w * 2
        span = max(xs[-1], 1e-9) if xs else 0.0

        def xpos(i: int) -> int:
            if xs is not None:
                return round(xs[i] / span * (dots_w - 1))
            return 0 if n <= 1 else round(i * (dots_w - 1) / (n - 1))

        xp = [xpos(i) for i in range(n)]
        # 10,000 scores fall on a few thousand dots: mark each dot once, and the best-so-far
        # (which changes rarely) is placed once per change, not once per job
        marks: set[tuple[int, int]] = set()
        points, trace = canvas.points, canvas.line
        prev_y: int | None = None
        last_b, by = math.nan, 0
        for i, (s, b) in enumerate(zip(scores, bests)):
            if not (math.isfinite(s) and math.isfinite(b)):
                continue
            x0 = xp[i]
            marks.add((x0, ypos(s)))
            if b != last_b:
                last_b, by = b, ypos(b)
            x1 = xp[i + 1] if i + 1 < n else x0
            if prev_y is not None and prev_y != by:
                canvas.vline(x0, prev_y, by)
            trace_row, bit = trace[by >> 2], by & 3
            for x in range(x0, max(x0, x1) + 1):
                trace_row[x >> 1] |= _BITS[x & 1][bit]
            prev_y = by
        for px, py in marks:  # a 2×2 dot mark: visible, still fine
            for x in (px, min(px + 1, dots_w - 1)):
                col, bits = x >> 1, _BITS[x & 1]
                for y in (py, min(py + 1, dots_h - 1)):
                    points[y >> 2][col] |= bits[y & 3]
        rows = canvas.rows(c.get("plot-point", "cyan"), f"bold {c.get('plot-best', 'yellow')}")
        out = []
        for r, row in enumerate(rows):
            if r in ticks:
                line = Text(ticks[r][:lab_w].rjust(lab_w) + "┤", style=axis_style)
            else:
                line = Text(names.get(r, "").rjust(lab_w) + "│", style=axis_style)
            line.append_text(row)
            out.append(line)
        out.append(self._legend(lab_w, width, bests, n, xs, span, log and "log" not in names.values()))
        return Text("\n").join(out)

    def _legend(
        self,
        lab_w: int,
        width: int,
        bests: list[float],
        n: int,
        xs: list[float] | None,
        span: float,
        log: bool,
    ) -> Text:
        """The x axis's corner and what the marks mean; the best score goes first when short."""
        c = theme_colors(self.app)
        axis_style = c.get("plot-axis", "grey50")
        goal = "max" if self.maximize else "min"
        axis = f"time → {fmt_since(span)}" if xs is not None else f"{n} jobs →"
        if self.early_stopped:
            axis += f" (+{self.early_stopped} stopped early)"
        best = f" best {fmt_score(bests[-1])}" if bests else ""
        log_y = "  log y" if log else ""
        for tail in (  # shorter ones while it does not fit: the header shows the best too
            f" best-so-far ({goal}){best}  {axis}{log_y}",
            f" best-so-far ({goal})  {axis}{log_y}",
            f" best ({goal})  {axis}{log_y}",
        ):
            if lab_w + 10 + len(tail) <= width:  # "└• score ━" before it
                break
        legend = Text(" " * lab_w + "└", style=axis_style)
        legend.append("•", style=c.get("plot-point", "cyan"))
        legend.append(" score ", style=axis_style)
        legend.append("━", style=f"bold {c.get('plot-best', 'yellow')}")
        legend.append(tail, style=axis_style)
        legend.truncate(width, overflow="ellipsis")
        return legend
