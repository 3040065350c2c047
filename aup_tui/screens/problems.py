"""Problems: what went wrong in this experiment, newest first, after its toast has gone.

The list is the state's (`ExperimentState.problems`: failed jobs with their reason, the experiment's
failure, engine notices at warning level and above), so the headless view could show it too.
Enter on a failed job opens its detail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ..state import ExperimentState, Problem
from ..widgets.attempts_table import format_time
from ..widgets.colors import on_theme_change, theme_colors
from .palette import PaletteCommand, ScreenCommands

PROBLEM_COLUMNS = ("time", "level", "job", "what went wrong")


class ProblemsCommands(ScreenCommands["ProblemsScreen"]):
    """The problems screen's actions by name."""

    def commands(self) -> Iterator[PaletteCommand]:
        screen = self.owner
        if self.allows("open_job"):
            yield PaletteCommand(
                f"Open job {screen.selected_jid}",
                "the failed job's detail and log (enter)",
                screen.action_open_job,
            )
        yield PaletteCommand("Back", "to the dashboard (escape)", screen.action_back)


class ProblemsScreen(Screen[None]):
    """The problems of `state`, refreshed while it is open; `open_job(jid)` opens a job's detail."""

    CSS_PATH = "problems.tcss"
    COMMANDS = {ProblemsCommands}
    BINDINGS = [
        Binding("escape", "back", "Back", id="problems.back"),
        # a priority binding: the table's own enter (hidden) would keep it out of the footer
        Binding("enter", "open_job", "Open job", priority=True, id="problems.open"),
    ]

    def __init__(
        self,
        state: ExperimentState,
        open_job: Callable[[int], object] | None = None,
        *,
        name: str | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id)
        self.state = state
        self.open_job = open_job
        self._shown: list[Problem] = []

    def compose(self) -> ComposeResult:
        yield Static("", id="problems-title")
        table: DataTable = DataTable(id="problems-table", cursor_type="row", zebra_stripes=True)
        table.border_title = "Problems, newest first"
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self._show()
        self.query_one("#problems-table", DataTable).focus()
        self.set_interval(1.0, self._show_if_new)
        on_theme_change(self, lambda: self._show(force=True))

    def _show_if_new(self) -> None:
        if len(self.state.problems) != len(self._shown):
            self._show()

    def _show(self, force: bool = False) -> None:
        problems = self.state.recent_problems()
        if problems == self._shown and not force:
            return
        self._shown = problems
        st = self.state
        count = f"{len(problems)} problem{'' if len(problems) == 1 else 's'}" if problems else "no problems"
        self.query_one("#problems-title", Static).update(
            Text.assemble((st.name or "experiment", "bold"), f" #{st.eid} · {count}")
        )
        colors = theme_colors(self.app)
        table = self.query_one("#problems-table", DataTable)
        selected = self.selected_jid
        table.clear(columns=True)
        for label in PROBLEM_COLUMNS:
            table.add_column(label, key=label)
        for i, problem in enumerate(problems):
            color = colors.get("status-failed" if problem.level == "error" else "status-waiting", "")
            table.add_row(
                format_time(problem.time) if problem.time else "",
                Text(problem.level, style=f"bold {color}"),
                "" if problem.jid is None else str(problem.jid),
                problem.message,
                key=str(i),
            )
        if not problems:
            table.add_row("", "", "", Text("nothing went wrong so far", style="dim"))
        elif selected is not None:  # keep the cursor on the job it was on
            for i, problem in enumerate(problems):
                if problem.jid == selected:
                    table.move_cursor(row=i, animate=False)
                    break
        self.refresh_bindings()

    @property
    def selected(self) -> Problem | None:
        table = self.query_one("#problems-table", DataTable)
        row = table.cursor_row
        return self._shown[row] if 0 <= row < len(self._shown) and table.row_count else None

    @property
    def selected_jid(self) -> int | None:
        problem = self.selected
        return problem.jid if problem is not None else None

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "open_job":  # only on a job's problem, and when there is a detail to open
            return self.open_job is not None and self.selected_jid is not None
        return True

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self.refresh_bindings()

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        """A click on a row."""
        event.stop()
        self.action_open_job()

    def action_open_job(self) -> None:
        jid = self.selected_jid
        if jid is None or self.open_job is None:
            return
        self.open_job(jid)

    def action_back(self) -> None:
        self.dismiss(None)
