"""The job queue: a DataTable keyed by job id that follows the experiment row by row.

`update_jobs(jids)` is the hot path: for each changed job it computes the row's cells, compares
them with what the table shows and calls `update_cell` only for cells that differ (fixed column
widths, so no column re-measuring), adds rows for new jobs and re-sorts at most once per batch.
A filter (`set_filter`) or a sort change rebuilds or reorders the table once: those are user
actions, not per-event work.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, Literal

from aup_tui_backends.ssh.hosts import short_node_name
from aup_tui_backends.status import JobStatus
from rich.text import Text
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

from ..state import ExperimentState, JobRow
from .colors import fmt_duration, fmt_score, on_theme_change, status_color, theme_colors
from .vim import TABLE_MOVES, vim_bindings

#: (key, label, width); params takes what is left.
COLUMNS = (
    ("id", "id", 5),
    ("status", "status", 11),
    ("resource", "resource", 8),
    ("params", "parameters", 24),
    ("score", "score", 11),
    ("duration", "time", 8),
    ("attempts", "try", 3),
)
SORTABLE = tuple(key for key, _, _ in COLUMNS)

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


def format_params(config: dict[str, Any]) -> str:
    parts = []
    for k, v in config.items():
        if k == "job_id":
            continue
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif not isinstance(v, (int, str)):
            v = json.dumps(v)
        parts.append(f"{k}={v}")
    return " ".join(parts)


def _status_group(status: str) -> str:
    """The filter a status falls under: stopped early counts as stopped, interrupted as failed."""
    st = JobStatus(status)
    return JobStatus.STOPPED if st.is_stopped else JobStatus.FAILED if st.is_failed else st


class JobTable(DataTable):
    """Jobs of one experiment; the cursor row is the selected job."""

    BINDINGS = [
        Binding("enter", "select_cursor", "Open", id="jobs.open"),
        *vim_bindings(TABLE_MOVES),
        Binding("o", "cycle_sort", "Sort", show=False, id="jobs.sort"),
        Binding("f", "cycle_status", "Status filter", show=False, id="jobs.status_filter"),
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
        self._shown: dict[int, tuple[str, ...]] = {}  # jid -> the cell values the table shows
        self._colors: dict[str, str] = {}

    # -- set-up ---------------------------------------------------------------------------

    def on_mount(self) -> None:
        self._colors = theme_colors(self.app)
        for key, label, width in COLUMNS:
            self.add_column(label, key=key, width=width)
        self.rebuild()
        on_theme_change(self, self.restyle)

    def on_resize(self) -> None:
        # the params column takes the width the other columns leave
        fixed = sum(w + 2 for k, _, w in COLUMNS if k != "params")
        width = max(12, self.scrollable_content_region.width - fixed - 3)
        col = self.columns.get(ColumnKey("params"))
        if col is not None and col.width != width:
            col.width = width
            self._require_update_dimensions = True
            self.refresh()

    # -- rendering rows -------------------------------------------------------------------

    def _cells(self, row: JobRow, now: float) -> tuple[Text | str, ...]:
        c = self._colors
        status = Text(STATUS_LABELS.get(row.status, row.status.lower()), style=status_color(c, row.status))
        score = Text(
            fmt_score(row.score), justify="right", style="bold" if row.jid == self.state.best_jid else ""
        )
        return (
            Text(str(row.jid), justify="right"),
            status,
            self._resource_name(row.resource),
            format_params(row.config),
            score,
            Text(fmt_duration(row.duration(now)), justify="right"),
            Text(str(row.attempts) if row.attempts else "", justify="right"),
        )

    def _resource_name(self, resource: str) -> str:
        """'cpu:cpu0' → 'cpu0' when the experiment runs on cpu anyway; cut to the narrow column
        keeping its end (a node's port: two nodes on one host stay apart)."""
        prefix = f"{self.state.resource}:" if self.state.resource else ""
        name = resource[len(prefix) :] if prefix and resource.startswith(prefix) else resource
        return short_node_name(name, next(width for key, _, width in COLUMNS if key == "resource"))

    def _matches(self, row: JobRow) -> bool:
        if self.filter_status and _status_group(row.status) != self.filter_status:
            return False
        if self.filter_text:
            hay = f"{row.jid} {row.status} {row.resource} {format_params(row.config)}".lower()
            return all(word in hay for word in self.filter_text.lower().split())
        return True

    def rebuild(self) -> None:
        """Show the state from scratch (start, filter change, theme change)."""
        selected = self.selected_jid
        self.clear()
        self._shown.clear()
        now = self.clock()
        for jid in sorted(self.state.jobs):
            row = self.state.jobs[jid]
            if self._matches(row):
                cells = self._cells(row, now)
                self.add_row(*cells, key=str(jid))
                self._shown[jid] = tuple(_plain(v) for v in cells)
        self._apply_sort()
        if selected is not None and selected in self._shown:
            self.move_cursor(row=self.get_row_index(str(selected)))
        self.post_message(
            self.FilterChanged(self.filter_text, self.filter_status, len(self._shown), len(self.state.jobs))
        )

    def update_jobs(self, jids: Iterable[int]) -> None:
        """Apply a batch of changed jobs: new rows added, changed cells updated, one sort at most."""
        now = self.clock()
        resort = False
        shown_count_changed = False  # a row added or filtered out: the title's count
        column_keys = [key for key, _, _ in COLUMNS]
        for jid in jids:
            row = self.state.jobs.get(jid)
            if row is None:
                continue
            shown = self._shown.get(jid)
            if not self._matches(row):
                if shown is not None:
                    self.remove_row(str(jid))
                    del self._shown[jid]
                    shown_count_changed = True
                continue
            cells = self._cells(row, now)
            plain = tuple(_plain(v) for v in cells)
            if shown is None:
                self.add_row(*cells, key=str(jid))
                self._shown[jid] = plain
                shown_count_changed = True
                resort |= self.sort_column != "id" or self.sort_reverse
                continue
            if plain == shown:
                continue
            for i, key in enumerate(column_keys):
                if plain[i] != shown[i]:
                    self._set_cell(str(jid), key, cells[i])
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

    # DataTable.update_cell bumps the table's update counter, which makes the next redraw
    # rebuild its row-order and row-offset lists and re-render every visible cell: O(rows) per
    # batch. Cell updates here never change the order or the heights of rows (fixed widths, one
    # line a row), so we write the cell and evict only the changed rows from the render caches
    # (which hold just rows drawn so far): a batch costs O(changed cells + cache size) at 100
    # rows and at 10,000 alike. Falls back to update_cell if DataTable's internals change.
    _dirty_rows: set[RowKey] | None = None

    def _set_cell(self, row_key: str, column_key: str, value: Text | str) -> None:
        data = getattr(self, "_data", None)
        if data is None or any(getattr(self, name, None) is None for name in _RENDER_CACHES):
            self.update_cell(row_key, column_key, value)
            return
        key = RowKey(row_key)
        data[key][ColumnKey(column_key)] = value
        if self._dirty_rows is None:
            self._dirty_rows = set()
        self._dirty_rows.add(key)

    def _cells_changed(self) -> None:
        dirty = self._dirty_rows
        if not dirty:
            return
        self._dirty_rows = None
        try:
            # the row and cell caches' keys start with the row key
            rows = self._row_render_cache
            for row_key in [k for k in rows.keys() if k[0] in dirty]:
                rows.discard(row_key)
            cells = self._cell_render_cache
            for cell_key in [k for k in cells.keys() if k[0] in dirty]:
                cells.discard(cell_key)
            indices = {self._row_locations.get(k) for k in dirty}
            renderables = self._row_renderable_cache  # keys: (update count, row index)
            for index_key in [k for k in renderables.keys() if k[1] in indices]:
                renderables.discard(index_key)
            self._line_cache.clear()
        except Exception:  # DataTable changed under us: the safe, slower way
            self._update_count += 1
        self.refresh()

    def tick(self) -> None:
        """Once a second while jobs run: their durations."""
        live = [jid for jid, row in self.state.jobs.items() if JobStatus(row.status).is_live]
        if live:
            self.update_jobs(live)

    def restyle(self) -> None:
        """The theme changed: recolour the status cells."""
        self._colors = theme_colors(self.app)
        now = self.clock()
        for jid in self._shown:
            row = self.state.jobs[jid]
            self._set_cell(str(jid), "status", self._cells(row, now)[1])
        self._dirty_cells = True
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

    def _sort_key(self, jid_cell: Text) -> tuple[Any, ...]:
        jid = int(jid_cell.plain)
        row = self.state.jobs[jid]
        col = self.sort_column
        if col == "id":
            return (jid,)
        if col == "score":
            missing = row.score is None
            value = row.score if row.score is not None else 0.0
            # jobs without a score last in either direction
            return (missing != self.sort_reverse, value, jid)
        if col == "duration":
            return (row.duration(self.clock()) or 0.0, jid)
        if col == "attempts":
            return (row.attempts, jid)
        if col == "status":
            return (row.status, jid)
        if col == "resource":
            return (row.resource, jid)
        return (format_params(row.config), jid)

    def _apply_sort(self) -> None:
        if self.row_count:
            self.sort("id", key=self._sort_key, reverse=self.sort_reverse)

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        if column not in SORTABLE:
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

    def _update_labels(self) -> None:
        for key, label, _ in COLUMNS:
            col = self.columns.get(ColumnKey(key))
            if col is None:
                continue
            arrow = (
                (" ▼" if self.sort_reverse else " ▲")
                if key == self.sort_column and (key != "id" or self.sort_reverse)
                else ""
            )
            col.label = Text(label + arrow)
        self.refresh()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def action_cycle_sort(self) -> None:
        i = SORTABLE.index(self.sort_column)
        self.sort_by(SORTABLE[(i + 1) % len(SORTABLE)], reverse=False)

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


_RENDER_CACHES = ("_row_render_cache", "_cell_render_cache", "_row_renderable_cache", "_line_cache")


def _plain(value: Text | str) -> str:
    return value.plain if isinstance(value, Text) else str(value)
