"""A job's attempts (one row per run of it: resource, start, duration, status, error), for the
job detail screen. It renders the attempt documents it is given, redrawing only when a cell
changed (a running attempt's duration moves on each second) or the theme's colours did."""

from __future__ import annotations

import time
from typing import Any

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual.widgets import DataTable

from .colors import status_color

ATTEMPT_COLUMNS = ("#", "resource", "start", "duration", "status", "error")
STATUS_COLUMN = ATTEMPT_COLUMNS.index("status")


def format_duration(seconds: float | None) -> str:
    """`12.3s`, `4m05s`, `2h07m`: short enough for a table cell."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_time(stamp: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp)) if stamp else ""


def attempt_row(attempt: dict[str, Any], now: float) -> tuple[str, ...]:
    """One attempt's cells; a running attempt's duration counts up to `now`."""
    start, end = attempt.get("start"), attempt.get("end")
    duration = (end if end else now) - start if start else None
    return (
        str(attempt.get("attempt", "")),
        str(attempt.get("resource") or ""),
        format_time(start),
        format_duration(duration),
        str(attempt.get("status") or ""),
        str(attempt.get("error") or ""),
    )


class AttemptsTable(DataTable[str | Text]):
    """The attempts of one job, oldest first, each status in its theme colour."""

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 -- Textual's name
        super().__init__(id=id, cursor_type="none", zebra_stripes=True)
        self._rows: list[tuple[str, ...]] = []

    def on_mount(self) -> None:
        self._set_columns([])

    def show(self, attempts: list[dict[str, Any]], now: float, colors: Any, *, force: bool = False) -> None:
        """Render `attempts` (the job document's list); `force` after a theme change."""
        rows = [attempt_row(a, now) for a in attempts]
        if rows == self._rows and not force:
            return
        self._set_columns(rows)
        for row, attempt in zip(rows, attempts):
            cells: list[str | Text] = list(row)
            status = row[STATUS_COLUMN]
            cells[STATUS_COLUMN] = Text(status, style=Style(bold=True, color=status_color(colors, status)))
            self.add_row(*cells, key=str(attempt.get("attempt")))
        self._rows = rows

    def _set_columns(self, rows: list[tuple[str, ...]]) -> None:
        """Empty the table and size its columns to fit `rows`.

        Widths are set here rather than measured by the DataTable on idle: a header drawn before
        that measurement stays cached at the old widths and no longer lines up with the cells.
        """
        self.clear(columns=True)
        for i, label in enumerate(ATTEMPT_COLUMNS):
            self.add_column(
                label, key=label, width=max([cell_len(label), *(cell_len(row[i]) for row in rows)])
            )
