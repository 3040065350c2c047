"""The job queue: a DataTable keyed by job id that follows the experiment row by row.

`update_jobs(jids)` is the hot path: for each changed job it computes the row's cells, compares
them with what the table shows and calls `update_cell` only for cells that differ (fixed column
widths, so no column re-measuring), adds rows for new jobs and re-sorts at most once per batch.
A filter (`set_filter`) or a sort change rebuilds or reorders the table once: those are user
actions, not per-event work. Each parameter has its own column (`param:<name>`), after the score.

Follow mode (on by default, `F` toggles it, a manual move turns it off) scrolls so that the running
jobs stay in view as finished ones pile up.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterable
from typing import Any, Literal

from aup_tui_backends.ssh.hosts import short_node_name
from aup_tui_backends.status import JobStatus
from rich.markup import escape
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

from ..state import ExperimentState, JobRow
from .colors import fmt_duration, fmt_score, on_theme_change, status_color, theme_colors
from .fast_table import FastDataTable
from .job_filter import Term, matches, parse_filter
from .vim import TABLE_MOVES, vim_bindings

#: (key, label, width) of the columns every experiment has; a column per parameter follows.
#: Widths leave room for the sort marker after the label.
COLUMNS = (
    ("id", "id", 5),
    ("status", "status", 11),
    ("resource", "resource", 10),
    ("score", "score", 11),
    ("duration", "time", 8),
)
SORTABLE = tuple(key for key, _, _ in COLUMNS)
PARAM_PREFIX = "param:"  # a parameter's column key: `param:lr`
RESOURCE_MAX = 24  # the resource column grows to the longest name up to this
PARAM_WIDTH = (6, 12)  # a parameter column's narrowest and widest
WIDTH_SAMPLE = 500  # rows whose values size a new parameter column

STATUS_LABELS: dict[str, str] = {JobStatus.EARLY_STOPPED: "early stop", JobStatus.INTERRUPTED: "interrupted"}

#: Status filter values, in the order `f` cycles through them.
STATUS_FILTERS = (
    None,
    JobStatus.RUNNING,
    JobStatus.FINISHED,
    JobStatus.FAILED,
    JobStatus.STOPPED,
    JobStatus.WAITING,
)


def format_value(value: Any) -> str:
    """A parameter's value in a cell: floats to 4 significant digits, lists and dicts as JSON."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (int, str)):
        return str(value)
    return json.dumps(value)


def format_params(config: dict[str, Any]) -> str:
    return " ".join(f"{k}={format_value(v)}" for k, v in config.items() if k != "job_id")


def resource_label(resource: str, attempts: int) -> str:
    """Where a job runs, as the resource column shows it: `cpu0`, `gpu1` (the card),
    `host:2222` (the node's name), with `#2` when this is its second attempt."""
    kind, sep, name = resource.partition(":")
    if not sep:
        label = resource
    elif kind == "gpu":
        label = f"gpu{name}"
    else:
        label = name
    return f"{label} #{attempts}" if attempts > 1 else label


def _param_cell(value: Any, width: int) -> str:
    """A parameter's value, numbers right-aligned in the column's `width` (one format step)."""
    kind = type(value)
    if kind is float:
        return f"{value:>{width}.4g}"
    if kind is int:
        return f"{value:>{width}}"
    return "" if value is None else escape(format_value(value))


def _resource_cell(resource: str, attempts: int) -> str:
    """The node's name, the GPU card or the CPU slot, and the attempt; cut to RESOURCE_MAX
    keeping the end (a node's port: two nodes on one host stay apart)."""
    suffix = f" #{attempts}" if attempts > 1 else ""
    return short_node_name(resource_label(resource, 0), RESOURCE_MAX - len(suffix)) + suffix


def _status_group(status: str) -> str:
    """The filter a status falls under: stopped early counts as stopped, interrupted as failed."""
    st = JobStatus(status)
    return JobStatus.STOPPED if st.is_stopped else JobStatus.FAILED if st.is_failed else st


class JobTable(FastDataTable):
    """Jobs of one experiment; the cursor row is the selected job."""

    BINDINGS = [
        Binding("enter", "select_cursor", "Open", id="jobs.open"),
        *vim_bindings(TABLE_MOVES),
        Binding("o", "cycle_sort", "Sort", show=False, id="jobs.sort"),
        Binding("O", "reverse_sort", "Reverse sort", show=False, id="jobs.sort_reverse"),
        Binding("f", "cycle_status", "Status filter", show=False, id="jobs.status_filter"),
        Binding("F", "toggle_follow", "Follow running jobs", show=False, id="jobs.follow"),
    ]

    class Sorted(Message):
        def __init__(self, column: str, reverse: bool) -> None:
            super().__init__()
            self.column, self.reverse = column, reverse

    class FilterChanged(Message):
        def __init__(self, text: str, status: str | None, shown: int, total: int) -> None:
            super().__init__()
            self.text, self.status, self.shown, self.total = text, status, shown, total

    def __init__(self, state: ExperimentState, clock: Callable[[], float], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.state = state
        self.clock = clock
        self.sort_column: str = "id"
        self.sort_reverse = False
        self.filter_text = ""
        self.filter_status: str | None = None
        #: scroll so the running jobs stay in view (`F`; a manual move turns it off)
        self.follow = True
        self.params: list[str] = []  # the parameters that have a column, in column order
        self._param_widths: list[int] = []  # their columns' widths
        self._shown: dict[int, tuple[str, ...]] = {}  # jid -> the cell values the table shows
        self._colors: dict[str, str] = {}
        self._status_cells: dict[str, Text] = {}
        self._running_jobs: set[int] = set()  # shown jobs that run now
        self._subtitle = ""

    # -- set-up ---------------------------------------------------------------------------

    def on_mount(self) -> None:
        self._colors = theme_colors(self.app)
        for key, label, width in COLUMNS:
            self.add_column(label, key=key, width=width)
        self.rebuild()
        on_theme_change(self, self.restyle)

    def _add_param_columns(self, rows: Iterable[JobRow]) -> bool:
        """A column for each parameter not seen before, as wide as its values in the first
        WIDTH_SAMPLE rows that have it; whether any was added."""
        known = {*self.params, "job_id"}
        new: dict[str, int] = {}
        sampled: dict[str, int] = {}
        for row in rows:
            if row.config.keys() <= known:
                continue
            for name in row.config:  # in the config's order
                if name not in known and sampled.get(name, 0) < WIDTH_SAMPLE:
                    sampled[name] = sampled.get(name, 0) + 1
                    new[name] = max(new.get(name, 0), len(format_value(row.config[name])))
            if all(n >= WIDTH_SAMPLE for n in sampled.values()):
                known |= sampled.keys()
        for name, value_width in new.items():
            width = min(PARAM_WIDTH[1], max(PARAM_WIDTH[0], value_width, len(name) + 2))
            self.params.append(name)
            self._param_widths.append(width)
            self.add_column(name, key=PARAM_PREFIX + name, width=width, default="")
        if new:
            self._update_labels()
        return bool(new)

    def _fit_resource_column(self, labels: Iterable[str]) -> None:
        """Widen the resource column to its longest name (up to RESOURCE_MAX); never narrows."""
        col = self.columns.get(ColumnKey("resource"))
        if col is None:
            return
        width = min(RESOURCE_MAX, max((len(label) for label in labels), default=0))
        if width > col.width:
            col.width = width
            self._require_update_dimensions = True
            self._update_count += 1
            self.refresh()

    # -- rendering rows -------------------------------------------------------------------

    def _cells(self, row: JobRow, now: float) -> tuple[Text | str, ...]:
        """The row's cells in column order: plain right-aligned strings where no style is needed
        (cheap to build for 10,000 rows), Text where colour or weight is."""
        status = self._status_cells.get(row.status)
        if status is None:
            label = STATUS_LABELS.get(row.status, row.status.lower())
            status = self._status_cells[row.status] = Text(
                label, style=status_color(self._colors, row.status)
            )
        score_text = f"{fmt_score(row.score):>11}"
        score: Text | str = Text(score_text, style="bold") if row.jid == self.state.best_jid else score_text
        config = row.config
        return (
            f"{row.jid:>5}",
            status,
            self._resource_name(row),
            score,
            f"{fmt_duration(row.duration(now)):>8}",
            *(_param_cell(config.get(name), w) for name, w in zip(self.params, self._param_widths)),
        )

    def _resource_name(self, row: JobRow) -> str:
        return _resource_cell(row.resource, row.attempts)

    def _values(self, row: JobRow, now: float) -> dict[str, Any]:
        """The row's raw value per filterable column name (lower-case)."""
        values: dict[str, Any] = {name.lower(): row.config.get(name) for name in self.params}
        base = {
            "id": row.jid,
            "status": STATUS_LABELS.get(row.status, row.status.lower()),
            "resource": self._resource_name(row),
            "score": row.score,
            "time": row.duration(now),
            "try": row.attempts,
        }
        return {**base, **values}

    def _matches(self, row: JobRow, terms: list[Term] | None = None) -> bool:
        if self.filter_status and _status_group(row.status) != self.filter_status:
            return False
        if self.filter_text:
            if terms is None:
                terms = self._terms()
            resource = self._resource_name(row)
            hay = f"{row.jid} {row.status} {row.resource} {resource} {format_params(row.config)}".lower()
            return matches(terms, self._values(row, self.clock()), hay)
        return True

    def _terms(self) -> list[Term]:
        names = {"id", "status", "resource", "score", "time", "try", *(p.lower() for p in self.params)}
        return parse_filter(self.filter_text, names)

    def rebuild(self) -> None:
        """Show the state from scratch (start, filter change, theme change): rows built and
        sorted in one pass and added at once (10,000 rows in a fraction of a second)."""
        selected = self.selected_jid
        self.clear()
        self._shown.clear()
        self._add_param_columns(self.state.jobs.values())
        terms = self._terms()
        jobs = self.state.jobs
        rows = [jobs[jid] for jid in sorted(jobs) if self._matches(jobs[jid], terms)]
        if self.sort_column != "id" or self.sort_reverse:
            rows.sort(key=self._row_sort_key, reverse=self.sort_reverse)
        # a few objects a row, none of them garbage: collection passes over 10,000 rows would cost
        # more than making them
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._fit_resource_column(_resource_cell(*p) for p in {(r.resource, r.attempts) for r in rows})
            self._shown.update((row.jid, ()) for row in rows)  # () until its cells are made
            self.add_rows_at_once([str(row.jid) for row in rows], self._build_row)
        finally:
            if collecting:
                gc.enable()
        self._running_jobs = {row.jid for row in rows if row.status == JobStatus.RUNNING}
        if selected is not None and selected in self._shown:
            self.move_cursor(row=self.get_row_index(str(selected)))
        self.post_message(
            self.FilterChanged(self.filter_text, self.filter_status, len(self._shown), len(self.state.jobs))
        )
        self._follow_later()

    def _build_row(self, key: str) -> tuple[Text | str, ...]:
        """The cells of a row the table reads for the first time, noted as shown."""
        jid = int(key)
        cells = self._cells(self.state.jobs[jid], self.clock())
        self._shown[jid] = tuple(v if type(v) is str else _plain(v) for v in cells)
        return cells

    def update_jobs(self, jids: Iterable[int]) -> None:
        """Apply a batch of changed jobs: new rows added, changed cells updated, one sort at most."""
        jids = list(jids)
        if self._add_param_columns(self.state.jobs[j] for j in jids if j in self.state.jobs):
            self.rebuild()  # a parameter seen for the first time: every row gets its cell
            return
        now = self.clock()
        resort = False
        shown_count_changed = False  # a row added or filtered out: the title's count
        column_keys = [column.key.value for column in self.ordered_columns]
        terms = self._terms()
        for jid in jids:
            row = self.state.jobs.get(jid)
            if row is None:
                continue
            shown = self._shown.get(jid)
            if row.status == JobStatus.RUNNING:
                self._running_jobs.add(jid)
            else:
                self._running_jobs.discard(jid)
            if not self._matches(row, terms):
                self._running_jobs.discard(jid)
                if shown is not None:
                    self.remove_row(str(jid))
                    del self._shown[jid]
                    shown_count_changed = True
                continue
            cells = self._cells(row, now)
            plain = tuple(_plain(v) for v in cells)
            if shown is None:
                self._fit_resource_column([plain[2]])
                self.add_row(*cells, key=str(jid))
                self._shown[jid] = plain
                shown_count_changed = True
                resort |= self.sort_column != "id" or self.sort_reverse
                continue
            if plain == shown:
                continue
            if not shown:  # its cells not made yet: made when read, from the row as it is now
                self.replace_row_lazily(str(jid), self._build_row)
                resort |= self.sort_column != "id"
                continue
            for i, key in enumerate(column_keys):
                if plain[i] != shown[i]:
                    if key == "resource":
                        self._fit_resource_column([plain[i]])
                    self._set_cell(str(jid), str(key), cells[i])
                    resort |= key == self.sort_column
            self._shown[jid] = plain
        self._cells_changed()
        if resort:
            self._apply_sort()
        if shown_count_changed:
            self.post_message(
                self.FilterChanged(
                    self.filter_text, self.filter_status, len(self._shown), len(self.state.jobs)
                )
            )
        self._follow_later()

    def tick(self) -> None:
        """Once a second while jobs run: their durations."""
        live = [jid for jid, row in self.state.jobs.items() if JobStatus(row.status).is_live]
        if live:
            self.update_jobs(live)

    def restyle(self) -> None:
        """The theme changed: recolour the status cells."""
        self._colors = theme_colors(self.app)
        self._status_cells.clear()
        now = self.clock()
        for jid in self._shown:
            row = self.state.jobs[jid]
            self._set_cell(str(jid), "status", self._cells(row, now)[1])
        self._cells_changed()

    # -- selection, sorting, filtering ----------------------------------------------------

    @property
    def selected_jid(self) -> int | None:
        if not self.row_count:
            return None
        try:
            key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except Exception:
            return None
        return int(key.value) if key.value is not None else None

    def _row_sort_key(self, row: JobRow) -> tuple[Any, ...]:
        col, jid = self.sort_column, row.jid
        if col == "id":
            return (jid,)
        if col == "score":
            # jobs without a score last in either direction
            return (row.score is None) != self.sort_reverse, row.score or 0.0, jid
        if col == "duration":
            return (row.duration(self.clock()) or 0.0, jid)
        if col == "status":
            return (row.status, jid)
        if col == "resource":
            return (row.resource, row.attempts, jid)
        value = row.config.get(col.removeprefix(PARAM_PREFIX))
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        # numbers before text, jobs without the parameter last in either direction
        rank = 2 if value is None else 0 if number else 1
        return (
            rank == 2 != self.sort_reverse,
            rank,
            value if number else 0.0,
            "" if number or value is None else format_value(value),
            jid,
        )

    def _apply_sort(self) -> None:
        """Order the rows from the jobs themselves (no cell is made or read for it)."""
        jobs = self.state.jobs
        order = sorted(self._shown, key=lambda jid: self._row_sort_key(jobs[jid]), reverse=self.sort_reverse)
        self.reorder([str(jid) for jid in order])

    @property
    def sort_columns(self) -> list[str]:
        """Every column the table sorts by, in the order `o` steps through them."""
        return [*SORTABLE, *(PARAM_PREFIX + name for name in self.params)]

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        """Sort by `column`; the same column again (`reverse` None) reverses the order."""
        if column not in self.sort_columns:
            raise ValueError(f"unknown column {column!r}")
        if reverse is None:
            reverse = (
                (not self.sort_reverse)
                if column == self.sort_column
                else column == "score" and self.state.maximize
            )
        self.sort_column, self.sort_reverse = column, reverse
        self._apply_sort()
        self._update_labels()
        self.post_message(self.Sorted(column, reverse))
        self._update_subtitle()

    def _update_labels(self) -> None:
        """Column labels, the sorted one with its marker: the label is cut, never the marker."""
        for column in self.ordered_columns:
            key = str(column.key.value)
            label = dict((k, lab) for k, lab, _ in COLUMNS).get(key, key.removeprefix(PARAM_PREFIX))
            if key == self.sort_column and (key != "id" or self.sort_reverse):
                marker = " ▼" if self.sort_reverse else " ▲"
                room = max(1, column.width - len(marker)) if not column.auto_width else len(label)
                text = label if len(label) <= room else label[: room - 1] + "…"
                column.label = Text(text + marker)
            else:
                column.label = Text(label)
        self.refresh()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def action_cycle_sort(self) -> None:
        """`o`: the next column, in its natural order (`O` reverses)."""
        columns = self.sort_columns
        i = columns.index(self.sort_column) if self.sort_column in columns else -1
        self.sort_by(columns[(i + 1) % len(columns)], reverse=False)

    def action_reverse_sort(self) -> None:
        self.sort_by(self.sort_column, reverse=not self.sort_reverse)

    # -- follow mode ----------------------------------------------------------------------

    @property
    def running_jids(self) -> list[int]:
        """Shown jobs that run now (kept as rows change: no scan of 10,000 rows a batch)."""
        return sorted(self._running_jobs)

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        self._update_subtitle()
        self._follow_later()

    def _follow_later(self) -> None:
        self._update_subtitle()
        if self.follow:
            self.call_after_refresh(self.scroll_to_running)

    def scroll_to_running(self) -> None:
        """Scroll (the cursor stays) so the running jobs are in view: all of them when they fit,
        else one (the nearest, so the view does not jump about); nothing when none runs or
        they are in view already."""
        if not self.follow or not self._running_jobs:
            return
        if self._require_update_dimensions:  # rows added: their virtual size first
            self._require_update_dimensions = False
            self._update_dimensions(self._new_rows)
            self._new_rows.clear()
        indices = [self._row_locations.get(RowKey(str(jid))) for jid in self.running_jids]
        rows = [i for i in indices if i is not None]
        if not rows:
            return
        first, last = min(rows), max(rows)
        height = max(
            1, self.scrollable_content_region.height - (self.header_height if self.show_header else 0)
        )
        top = int(self.scroll_y)
        if first >= top and last < top + height:
            return
        if last - first + 1 > height:  # too far apart to show at once: one in view is enough
            if any(top <= i < top + height for i in rows):
                return
            nearest = min(rows, key=lambda i: abs(i - top))
            target = nearest if nearest < top else nearest - height + 1
        else:
            target = first if first < top else last - height + 1
        self.scroll_to(y=target, animate=False, immediate=True)

    def _update_subtitle(self) -> None:
        """The border's line under the table: the sort order, and whether it follows running jobs."""
        parts = []
        if self.sort_column != "id" or self.sort_reverse:
            name = self.sort_column.removeprefix(PARAM_PREFIX)
            parts.append(f"sorted by {name} {'▼' if self.sort_reverse else '▲'}")
        if self._running_jobs:  # running jobs among the rows shown: something to follow
            parts.append("following running jobs (F)" if self.follow else "F follows running jobs")
        subtitle = " · ".join(parts)
        if subtitle != self._subtitle:  # setting it redraws the whole table, even to the same text
            self._subtitle = self.border_subtitle = subtitle

    def _stop_following(self) -> None:
        if self.follow:
            self.follow = False
            self._update_subtitle()

    # a person moving the cursor or scrolling means to look elsewhere: follow mode stops
    def action_cursor_up(self) -> None:
        self._stop_following()
        super().action_cursor_up()
        self._scroll_cursor_into_view()  # following may have left the cursor out of view

    def action_cursor_down(self) -> None:
        self._stop_following()
        super().action_cursor_down()
        self._scroll_cursor_into_view()  # following may have left the cursor out of view

    def action_page_up(self) -> None:
        self._stop_following()
        super().action_page_up()
        self._scroll_cursor_into_view()  # following may have left the cursor out of view

    def action_page_down(self) -> None:
        self._stop_following()
        super().action_page_down()
        self._scroll_cursor_into_view()  # following may have left the cursor out of view

    def action_scroll_top(self) -> None:
        self._stop_following()
        super().action_scroll_top()
        self._scroll_cursor_into_view()  # following may have left the cursor out of view

    def action_scroll_bottom(self) -> None:
        self._stop_following()
        super().action_scroll_bottom()
        self._scroll_cursor_into_view()  # following may have left the cursor out of view

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._stop_following()
        super()._on_mouse_scroll_up(event)

    def _on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self._stop_following()
        super()._on_mouse_scroll_down(event)

    def action_cycle_status(self) -> None:
        i = STATUS_FILTERS.index(self.filter_status) if self.filter_status in STATUS_FILTERS else 0
        self.set_filter(self.filter_text, STATUS_FILTERS[(i + 1) % len(STATUS_FILTERS)])

    def set_filter(self, text: str | None = None, status: str | None | Literal[False] = False) -> None:
        """Filter by free text (words all present) and/or status; `status=False` keeps it."""
        if text is not None:
            self.filter_text = text.strip()
        if status is not False:
            self.filter_status = status
        self.rebuild()

    @property
    def shown_jids(self) -> list[int]:
        """Job ids in display order (tests, scripts)."""
        keys = (self.coordinate_to_cell_key(Coordinate(i, 0))[0].value for i in range(self.row_count))
        return [int(key) for key in keys if key is not None]  # every row is keyed by its job id


def _plain(value: Text | str) -> str:
    return value.plain if isinstance(value, Text) else str(value)
