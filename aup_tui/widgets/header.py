"""The dashboard's header: experiment name and status, elapsed time, progress and the best job.

It renders the `ExperimentState` it is given, with a clock injected (a fixed one in tests), and
redraws itself once a second only while the experiment runs.
"""

from __future__ import annotations

from collections.abc import Callable

from aup_tui_backends.status import JobStatus
from rich.text import Text
from textual.reactive import reactive
from textual.timer import Timer
from textual.widget import Widget

from ..state import CONNECTING, ExperimentState
from .colors import fmt_duration, fmt_score, on_theme_change, status_color, theme_colors

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

#: The progress bar's cells: ended jobs solid in their status colour, running ones a lighter shade
#: (they are not done yet), the rest of the budget an empty track.
ENDED_CELL = "█"
RUNNING_CELL = "▒"
EMPTY_CELL = "░"


def progress_bar(st: ExperimentState, width: int, c: dict[str, str]) -> Text:
    """`width` cells: finished, failed, stopped (solid), then running (shaded), then what is left."""
    segments = [
        (st.done, ENDED_CELL, "status-finished"),
        (st.failed, ENDED_CELL, "status-failed"),
        (st.stopped, ENDED_CELL, "status-stopped"),
        (st.running, RUNNING_CELL, "status-running"),
    ]
    bar = Text(no_wrap=True)
    used = 0
    if st.total:
        acc = 0
        for n, glyph, var in segments:
            acc += n
            cells = max(0, min(round(width * acc / st.total) - used, width - used))
            if cells:
                bar.append(glyph * cells, style=c[var])
                used += cells
    bar.append(EMPTY_CELL * (width - used), style=c.get("plot-axis", "grey50"))
    return bar


class ExperimentHeader(Widget):
    """Two lines: who/what/how long/best (and, on the right, how many problems were kept and the
    passive job waiting), then the progress bar with the job counts."""

    waiting = reactive(0)

    def __init__(self, state: ExperimentState, clock: Callable[[], float], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state
        self.clock = clock
        self._ticks = 0
        self._timer: Timer | None = None

    def on_mount(self) -> None:
        self._timer = self.set_interval(1.0, self._tick, pause=not self.state.is_live)
        on_theme_change(self, self.refresh)

    def _tick(self) -> None:
        self._ticks += 1
        self.refresh()

    def update_state(self) -> None:
        """The state changed: redraw, and tick only while the experiment runs."""
        if self._timer is not None:
            if self.state.is_live:
                self._timer.resume()
            else:
                self._timer.pause()
        self.refresh()

    def _line1(self, c: dict[str, str], now: float, compact: bool) -> Text:
        st = self.state
        line = Text(no_wrap=True, overflow="ellipsis")
        if st.status == CONNECTING:
            line.append(SPINNER[self._ticks % len(SPINNER)] + " ", style=c["status-running"])
        line.append(st.name or "experiment", style="bold")
        if st.eid is not None:
            line.append(f" #{st.eid}", style=c.get("plot-axis", ""))
        status = "connecting…" if st.status == CONNECTING else st.status
        line.append(" " if compact else "  ")
        line.append(
            f" {status} ",
            style=f"bold reverse {status_color(c, JobStatus.RUNNING if st.status == CONNECTING else st.status)}",
        )
        sep = " " if compact else "  "
        line.append(f"{sep}{fmt_duration(st.elapsed(now))}{'' if compact else ' elapsed'}")
        goal = "" if compact else f" ({'max' if st.maximize else 'min'})"
        if st.best_jid is not None:
            line.append(f"{sep}best{goal} ")
            line.append(fmt_score(st.best_score), style=f"bold {c['status-finished']}")
            line.append(f" #{st.best_jid}" if compact else f" job {st.best_jid}")
        else:
            line.append(f"{sep}best{goal} —")
        return line

    def render(self) -> Text:
        st = self.state
        c = theme_colors(self.app)
        width = max(20, self.size.width)
        now = self.clock()
        # line 1: name, status, elapsed, best, passive badge — compacted when it does not fit
        badge = None
        if st.waiting:
            n = len(st.waiting)
            jid = min(st.waiting)
            badge = Text(
                f" ⚑ {'job ' + str(jid) if n == 1 else str(n) + ' jobs'} waiting for you · p ",
                style=f"bold reverse {c['status-waiting']}",
            )
        problems = len(st.problems)
        if problems:  # never at zero: a clean run's header stays as it was
            count = Text(f" ⚠ {problems} · ! ", style=f"bold {c['status-failed']}")
            badge = count if badge is None else count + badge
        room = width - (badge.cell_len + 1 if badge is not None else 0)
        line1 = self._line1(c, now, compact=False)
        if line1.cell_len > room:
            line1 = self._line1(c, now, compact=True)
        if badge is not None:
            pad = width - line1.cell_len - badge.cell_len
            if pad >= 1:
                line1.append(" " * pad)
                line1.append_text(badge)
            else:
                line1.truncate(max(0, width - badge.cell_len - 1), overflow="ellipsis")
                line1.append(" ")
                line1.append_text(badge)
        line1.truncate(width, overflow="ellipsis")
        # line 2: the progress bar done/running/failed/stopped of total, then the counts
        total = st.total
        counts = Text(no_wrap=True)
        counts.append(f" {st.ended}/{total}" if total else " 0/0")
        counts.append(f"  ✓{st.done}", style=c["status-finished"])
        counts.append(f" ▶{st.running}", style=c["status-running"])
        counts.append(f" ✗{st.failed}", style=c["status-failed"])
        if st.stopped:
            counts.append(f" ■{st.stopped}", style=c["status-stopped"])
        bar_width = max(10, width - counts.cell_len)
        line2 = progress_bar(st, bar_width, c) + counts
        line2.truncate(width)
        return Text("\n").join([line1, line2])
