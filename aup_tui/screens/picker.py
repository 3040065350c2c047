"""The experiments of a `.aup` folder, newest first: status, best score, job counts; enter opens one."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from aup_tui_backends.status import JobStatus
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.widgets.data_table import ColumnKey

from ..widgets.colors import fmt_score, on_theme_change, status_color, theme_colors
from ..widgets.vim import TABLE_MOVES, vim_bindings
from .palette import PaletteCommand, ScreenCommands


def ago(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s ago"
    if s < 3600:
        return f"{s // 60}m ago"
    if s < 86400:
        return f"{s // 3600}h ago"
    return f"{s // 86400}d ago"


COLUMNS = (
    ("eid", "id", 3),
    ("name", "name", 18),
    ("status", "status", 10),
    ("best", "best (job)", 16),
    ("jobs", "ok/fail/all", 11),
    ("started", "started", 8),
)


class ExperimentTable(DataTable):
    """The experiments, one row each (keyed by eid), moved through with the vim keys too."""

    BINDINGS = vim_bindings(TABLE_MOVES)


class PickerCommands(ScreenCommands["PickerScreen"]):
    """The picker's actions, and each experiment it lists by name."""

    def commands(self) -> Iterator[PaletteCommand]:
        screen = self.owner
        if screen.rows:
            yield PaletteCommand("Open selected experiment", "its dashboard (enter)", screen.action_open)
        if screen.connector is not None:
            yield PaletteCommand(
                "Reload experiments", "read the list again from the store (r)", screen.action_reload
            )
        for exp in sorted(screen.rows or (), key=lambda e: e["eid"], reverse=True):
            eid = exp["eid"]
            yield PaletteCommand(
                f"Experiment {eid}: {exp.get('name', '')}",
                f"open experiment {eid} ({exp['status'].lower()})",
                partial(screen.open, eid),
            )


class PickerScreen(Screen):
    """Pick an experiment. Rows come from the store (a worker) or are given (`rows`, for tests)."""

    CSS_PATH = "picker.tcss"
    COMMANDS = {PickerCommands}
    BINDINGS = [
        Binding("enter", "open", "Open", id="picker.open"),
        Binding("r", "reload", "Reload", id="picker.reload"),
    ]

    class Loaded(Message):
        def __init__(self, rows: list[dict[str, Any]]) -> None:
            super().__init__()
            self.rows = rows

    class Chosen(Message):
        """The person chose experiment `eid` (the app opens its dashboard)."""

        def __init__(self, eid: int) -> None:
            super().__init__()
            self.eid = eid

    def __init__(
        self,
        connector: Any = None,
        rows: list[dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.connector = connector
        self.rows = rows
        self.clock = clock

    def compose(self) -> ComposeResult:
        yield Static("Experiments — newest first; enter opens one", id="picker-title")
        yield ExperimentTable(id="experiments", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.border_title = "Experiments"
        for key, label, width in COLUMNS:
            table.add_column(label, key=key, width=width)
        table.focus()
        on_theme_change(self, self.restyle)
        if self.rows is not None:
            self._show(self.rows)
        else:
            table.loading = True
            self._load()

    def on_resize(self) -> None:
        table = self.query_one(DataTable)
        fixed = sum(w + 2 for k, _, w in COLUMNS if k != "name")
        col = table.columns.get(ColumnKey("name"))
        width = max(8, table.scrollable_content_region.width - fixed - 3)
        if col is not None and col.width != width:
            col.width = width
            table.refresh()

    @work(thread=True, exclusive=True)
    def _load(self) -> None:
        conn = self.connector
        rows = []
        for exp in conn.experiments():
            counts: dict[str, int] = {}
            for job in conn.jobs(exp["eid"]):
                counts[job["status"]] = counts.get(job["status"], 0) + 1
            rows.append({**exp, "counts": counts})
        self.post_message(self.Loaded(rows))

    def on_picker_screen_loaded(self, message: Loaded) -> None:
        self.rows = message.rows
        self.query_one(DataTable).loading = False
        self._show(message.rows)

    def _show(self, rows: list[dict[str, Any]]) -> None:
        table = self.query_one(DataTable)
        table.clear()
        c = theme_colors(self.app)
        now = self.clock()
        for exp in sorted(rows, key=lambda e: e["eid"], reverse=True):
            counts = exp.get("counts", {})
            done = counts.get(JobStatus.FINISHED, 0)
            failed = sum(n for status, n in counts.items() if JobStatus(status).is_failed)
            total = max(int(exp.get("n_samples") or 0), sum(counts.values()))
            best = (
                f"{fmt_score(exp['best_score'])} ({exp['best_jid']})"
                if exp.get("best_jid") is not None
                else "—"
            )
            start = exp.get("start")
            table.add_row(
                Text(str(exp["eid"]), justify="right"),
                exp.get("name", ""),
                Text(exp["status"].lower(), style=status_color(c, exp["status"])),
                best,
                f"{done}/{failed}/{total}",
                ago(now - start) if start else "",
                key=str(exp["eid"]),
            )

    def restyle(self) -> None:
        if self.rows is not None:
            self._show(self.rows)

    def open(self, eid: int) -> None:
        """Open experiment `eid`: the app, which owns the screens, shows its dashboard."""
        self.post_message(self.Chosen(eid))

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return
        key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        if key.value is not None:  # every row is keyed by its eid
            self.open(int(key.value))

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_reload(self) -> None:
        if self.connector is not None:
            self._load()

    def on_screen_resume(self) -> None:
        if self.connector is not None and self.rows is not None:
            self._load()
