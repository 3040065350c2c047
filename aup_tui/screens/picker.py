"""The experiments of a `.aup` folder, newest first: whole name, status, best score, jobs, start time.

enter opens one; space marks experiments and `c` compares the marked ones (two or more); `R`
resumes a stopped, failed or interrupted one and `ctrl+r` runs a finished one's failed jobs again.
The name column takes the room its longest name needs and is cut with … only when the terminal is
too narrow for it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

from aup_tui_backends.status import ExperimentStatus, JobStatus
from rich.console import JustifyMethod
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
    """How long ago an experiment started (no time zone: the same on every machine)."""
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s ago"
    if s < 3600:
        return f"{s // 60}m ago"
    if s < 86400:
        return f"{s // 3600}h ago"
    return f"{s // 86400}d ago"


MARK = "●"
#: key, label, width (None: the name, as wide as the room left and its longest name allow)
COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("mark", "", 1),
    ("eid", "id", 3),
    ("name", "name", None),
    ("status", "status", 9),
    ("best", "best (job)", 14),
    ("jobs", "jobs", 9),
    ("started", "started", 8),
)
MIN_NAME = 8


def name_width(names: Sequence[str], room: int) -> int:
    """The name column's width: its longest name (its label at least), at most the room left."""
    need = max((len(n) for n in names), default=0)
    return max(MIN_NAME, min(max(need, len("name")), room))


class ExperimentTable(DataTable):
    """The experiments, one row each (keyed by eid), moved through with the vim keys too."""

    BINDINGS = vim_bindings(TABLE_MOVES)


class PickerCommands(ScreenCommands["PickerScreen"]):
    """The picker's actions, and each experiment it lists by name."""

    def commands(self) -> Iterator[PaletteCommand]:
        screen = self.owner
        if screen.rows:
            yield PaletteCommand("Open selected experiment", "its dashboard (enter)", screen.action_open)
            yield PaletteCommand(
                "Mark selected experiment",
                "mark or unmark it for comparison (space)",
                screen.action_toggle_mark,
            )
        if self.allows("resume"):
            yield PaletteCommand(
                "Resume selected experiment",
                "its failed, stopped and interrupted jobs again, then the rest of its budget (R)",
                screen.action_resume,
            )
        if self.allows("rerun_failed"):
            yield PaletteCommand(
                "Re-run failed jobs of selected experiment",
                "each failed job's config again, as its next attempt (ctrl+r)",
                screen.action_rerun_failed,
            )
        if self.allows("compare"):
            yield PaletteCommand(
                "Compare marked experiments",
                "their best-so-far curves on one plot, best configs side by side (c)",
                screen.action_compare,
            )
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
        Binding("space", "toggle_mark", "Mark", id="picker.mark"),
        Binding("c", "compare", "Compare marked", id="picker.compare"),
        Binding("r", "reload", "Reload", id="picker.reload"),
        Binding("R", "resume", "Resume", id="picker.resume"),
        Binding("ctrl+r", "rerun_failed", "Re-run failed", id="picker.rerun_failed"),
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
        self.marked: set[int] = set()  # the eids marked for comparison, in no order

    def compose(self) -> ComposeResult:
        yield Static(
            "Experiments, newest first · enter opens · space marks · c compares the marked",
            id="picker-title",
        )
        yield ExperimentTable(id="experiments", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.border_title = "Experiments"
        for key, label, width in COLUMNS:
            justify: JustifyMethod = "right" if key in ("eid", "jobs") else "left"
            table.add_column(Text(label, justify=justify), key=key, width=width or MIN_NAME)
        table.focus()
        on_theme_change(self, self.restyle)
        if self.rows is not None:
            self._show(self.rows)
        else:
            table.loading = True
            self._load()

    def on_resize(self) -> None:
        self._fit_name()

    def _fit_name(self) -> None:
        """Give the name column the room its longest name needs, as far as the table has it."""
        table = self.query_one(DataTable)
        col = table.columns.get(ColumnKey("name"))
        if col is None:
            return
        pad = 2 * table.cell_padding
        fixed = sum((w or 0) + pad for k, _, w in COLUMNS if k != "name")
        room = table.scrollable_content_region.width - fixed - pad - 1  # one for a scrollbar
        width = name_width([str(e.get("name", "")) for e in self.rows or ()], room)
        if col.width != width:
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
        row = table.cursor_row
        table.clear()
        self._fit_name()
        c = theme_colors(self.app)
        now = self.clock()
        for exp in sorted(rows, key=lambda e: e["eid"], reverse=True):
            counts = exp.get("counts", {})
            done = counts.get(JobStatus.FINISHED, 0)
            total = max(int(exp.get("n_samples") or 0), sum(counts.values()))
            best = (
                f"{fmt_score(exp['best_score'])} ({exp['best_jid']})"
                if exp.get("best_jid") is not None
                else "—"
            )
            table.add_row(
                Text(MARK if exp["eid"] in self.marked else " ", style="bold"),
                Text(str(exp["eid"]), justify="right"),
                Text(str(exp.get("name", "")), no_wrap=True, overflow="ellipsis"),
                Text(exp["status"].lower(), style=status_color(c, exp["status"])),
                best,
                Text(f"{done}/{total}", justify="right"),
                ago(now - exp["start"]) if exp.get("start") else "",
                key=str(exp["eid"]),
            )
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1))

    def restyle(self) -> None:
        if self.rows is not None:
            self._show(self.rows)

    def open(self, eid: int) -> None:
        """Open experiment `eid`: the app, which owns the screens, shows its dashboard."""
        self.post_message(self.Chosen(eid))

    @property
    def selected_eid(self) -> int | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return int(key.value) if key.value is not None else None  # every row is keyed by its eid

    def action_open(self) -> None:
        eid = self.selected_eid
        if eid is not None:
            self.open(eid)

    def action_toggle_mark(self) -> None:
        """Mark the experiment under the cursor for comparison (or unmark it), then move down."""
        eid = self.selected_eid
        if eid is None:
            return
        self.marked.symmetric_difference_update({eid})
        table = self.query_one(DataTable)
        table.update_cell(str(eid), "mark", Text(MARK if eid in self.marked else " ", style="bold"))
        table.action_cursor_down()

    def action_compare(self) -> None:
        if len(self.marked) < 2:
            self.notify("mark two or more experiments with space, then press c", timeout=4)
            return
        from .compare import CompareScreen

        self.app.push_screen(CompareScreen(sorted(self.marked), connector=self.connector, rows=self.rows))

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """Comparing needs two experiments to pick from; resuming, a selected one that stopped,
        failed or was interrupted; re-running failed jobs, a finished one with failed jobs."""
        if action == "compare":
            return len(self.rows or ()) >= 2
        if action in ("resume", "rerun_failed"):
            exp = self.selected_row
            if exp is None or self.connector is None or getattr(self.app, "readonly", False):
                return False
            if action == "resume":
                return ExperimentStatus(exp["status"]).is_resumable
            counts = exp.get("counts", {})
            failed = counts.get(JobStatus.FAILED, 0) + counts.get(JobStatus.INTERRUPTED, 0)
            return exp["status"] == ExperimentStatus.FINISHED and failed > 0
        return True

    @property
    def selected_row(self) -> dict[str, Any] | None:
        """The record of the experiment under the cursor."""
        eid = self.selected_eid if self.is_mounted else None
        return next((e for e in self.rows or () if e["eid"] == eid), None)

    def action_resume(self) -> None:
        """Continue the selected experiment here (asks first); its dashboard shows it live."""
        eid = self.selected_eid
        if eid is not None and self.check_action("resume", ()):
            self.app.continue_experiment(eid, "resume")  # type: ignore[attr-defined]

    def action_rerun_failed(self) -> None:
        """Run the selected finished experiment's failed jobs again (asks first)."""
        eid = self.selected_eid
        if eid is not None and self.check_action("rerun_failed", ()):
            self.app.continue_experiment(eid, "rerun")  # type: ignore[attr-defined]

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.refresh_bindings()  # R and F follow the selected experiment

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
