"""The nodes panel: one row per SSH node (or Ray node: then CPUs and GPUs in use instead of
round trip and load) — state (UP/SLOW/DOWN, in the theme's colours), round
trip, load, memory, our jobs there, since when it is in that state and, where there is room, why
it is down (or "jobs running" when it is UP because its jobs make progress although no probe
answered: the monitor's evidence, :meth:`~aup_tui_backends.monitors.NodeMonitor.note_alive`).

It renders the statuses it is given (`panel.statuses = {...}` or `update_statuses`), keyed by node
name: a new round only touches the cells that changed. `enter` on a row posts
`NodesPanel.NodeSelected(name)` (the dashboard opens the node's details). In a one-line slot (the
dashboard below 140 columns) it shows a summary instead; `enter` there opens the worst node.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Mapping

from aup_tui_backends.monitors.nodes import NodeState, NodeStatus
from aup_tui_backends.monitors.ray_cluster import is_ray_node_key
from aup_tui_backends.ssh.hosts import short_node_name
from rich.console import JustifyMethod
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import DataTable, Static

from .colors import fmt_since, on_theme_change, state_color, theme_colors

__all__ = ["NodesPanel", "EMPTY_TEXT", "brief_error", "node_cells", "nodes_summary"]

EMPTY_TEXT = "Nodes: none configured (aup-tui init --overwrite --node USER@HOST[:PORT])"
GIB = 1 << 30
MAX_ROWS = 10  # nodes shown at once (the table scrolls)

#: column key → (label, width); the display order. "error" is as wide as the space left, if ≥ this.
COLUMNS: dict[str, tuple[str, int]] = {
    "node": ("Node", 10),
    "host": ("Host", 22),
    "state": ("State", 5),
    "rtt": ("RTT", 6),
    "load": ("Load", 5),
    "mem": ("Mem", 10),
    "jobs": ("Jobs", 4),
    "since": ("Since", 7),
    "error": ("Problem", 12),
}
#: the order columns are kept in when the panel is narrow
PRIORITY = ("node", "state", "rtt", "jobs", "load", "since", "error", "mem", "host")
SEVERITY = {NodeState.DOWN: 0, NodeState.SLOW: 1, NodeState.UNKNOWN: 2, NodeState.UP: 3}


def brief_error(error: str) -> str:
    """The error without the node's address (its row names the node): what fits in a cell."""
    if error.startswith("cannot connect to ") and ": " in error:
        error = error.split(": ", 1)[1]
    error = re.sub(r"^host key for \S+ ", "host key ", error)
    return re.sub(r" on \S+$", "", error)


def node_cells(status: NodeStatus, now: float, colors: Mapping[str, str]) -> dict[str, Text | str]:
    """Every column's cell for one node."""
    muted = colors.get("status-queued", "grey50")
    state = status.state
    label = "…" if state is NodeState.UNKNOWN else str(state)  # the first probe has not answered
    rtt = "—" if status.rtt is None else f"{status.rtt * 1000:.0f} ms"
    load = "—" if status.load is None else f"{status.load[0]:.2f}"
    if status.mem_total:
        used = status.mem_used
        mem = f"{(used or 0) / GIB:.1f}/{status.mem_total / GIB:.0f}G"
    else:
        mem = "—"
    since = "" if state is NodeState.UNKNOWN else fmt_since(now - status.since)
    return {
        "node": Text(short_node_name(status.display_name, COLUMNS["node"][1]), style="bold"),
        "host": Text(status.host, style=muted),
        "state": Text(label, style=f"bold {state_color(colors, state)}"),
        "rtt": Text(rtt, justify="right"),
        "load": Text(load, justify="right"),
        "mem": Text(mem, justify="right"),
        "jobs": Text(str(status.jobs) if status.jobs else "·", justify="right"),
        "since": Text(since, justify="right", style=muted),
        "error": Text(
            # UP on the jobs' word: say so; a Ray node: its CPUs and GPUs in use
            status.evidence or status.usage or brief_error(status.error),
            style=muted if status.evidence or status.usage else state_color(colors, NodeState.DOWN),
            no_wrap=True,
            overflow="ellipsis",
        ),
    }


def nodes_summary(
    statuses: Mapping[str, NodeStatus] | None, colors: Mapping[str, str] | None = None, width: int = 200
) -> Text:
    """One line: how many nodes are in each state (coloured), and which are down when it fits."""
    colors = colors or {}
    text = Text(no_wrap=True, overflow="ellipsis")
    if not statuses:
        text.append(EMPTY_TEXT, style=colors.get("status-queued", ""))
        text.truncate(width, overflow="ellipsis")
        return text
    counts: dict[NodeState, int] = {}
    for s in statuses.values():
        counts[s.state] = counts.get(s.state, 0) + 1
    text.append("Nodes")
    for st in (NodeState.UP, NodeState.SLOW, NodeState.DOWN, NodeState.UNKNOWN):
        if counts.get(st):
            text.append(f" {counts[st]} ")
            text.append(
                "probing" if st is NodeState.UNKNOWN else str(st), style=f"bold {state_color(colors, st)}"
            )
    down = sorted(s.display_name for s in statuses.values() if s.state is NodeState.DOWN)
    tail = f" ({', '.join(down)})" if down else ""
    if len(text.plain) + len(tail) <= width:
        text.append(tail, style=colors.get("status-failed", ""))
    text.truncate(width, overflow="ellipsis")
    return text


def choose_columns(width: int, cell_padding: int = 1, skip: Collection[str] = ()) -> dict[str, int]:
    """The columns that fit in `width` (key → width, display order), most important first, but
    those in `skip`; the problem column takes whatever is left."""
    chosen: dict[str, int] = {}
    used = 0
    for key in PRIORITY:
        if key in skip:
            continue
        need = COLUMNS[key][1] + 2 * cell_padding
        if used + need <= width:
            chosen[key] = COLUMNS[key][1]
            used += need
    if "error" in chosen:  # the space no other column wanted
        chosen["error"] = width - used + COLUMNS["error"][1]
    return {k: chosen[k] for k in COLUMNS if k in chosen}


#: columns a Ray cluster's nodes have nothing in (Ray's state has no round trip or load)
RAY_SKIPPED = ("rtt", "load")


def _ray_only(statuses: Mapping[str, NodeStatus]) -> bool:
    """Every row is a Ray node (it says what is in use): its CPUs and GPUs get the room."""
    return bool(statuses) and all(is_ray_node_key(key) for key in statuses)


class NodeSummary(Static, can_focus=True):
    """The one-line form of the panel (focusable: enter opens the worst node)."""

    BINDINGS = [Binding("enter", "open", "Open node", id="nodes.open_summary")]

    _shown: Text | None = None

    def show(self, text: Text) -> None:
        """Show `text`, if it differs from what is shown: an update relayouts the screen, and the
        panel re-renders its summary every second while nothing changes."""
        if text != self._shown:
            self._shown = text
            self.update(text)

    def action_open(self) -> None:
        panel = self.parent
        if isinstance(panel, NodesPanel):
            panel.open_worst()


class NodesPanel(Widget):
    """Node health, one row per node (a DataTable keyed by node name)."""

    DEFAULT_CSS = """
    NodesPanel {
        height: auto;
        max-height: 14;

        & > DataTable {
            height: auto;
            background: transparent;
            scrollbar-size-vertical: 1;
        }

        & > NodeSummary {
            height: auto;
            background: transparent;
            text-wrap: nowrap;
            text-overflow: ellipsis;
        }
    }
    """
    BINDINGS = [Binding("r", "retry", "Probe now", id="nodes.retry")]

    class NodeSelected(Message):
        """The person asked for a node's details."""

        def __init__(self, panel: NodesPanel, node: str) -> None:
            super().__init__()
            self.panel = panel
            self.node = node

        @property
        def control(self) -> NodesPanel:
            return self.panel

    class RetryRequested(Message):
        """The person asked to probe a node now (None: every node)."""

        def __init__(self, node: str | None) -> None:
            super().__init__()
            self.node = node

    statuses: reactive[dict[str, NodeStatus] | None] = reactive(None, init=False, always_update=True)

    def __init__(
        self,
        statuses: Mapping[str, NodeStatus] | None = None,
        clock: Callable[[], float] = time.time,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.clock = clock
        self.set_reactive(NodesPanel.statuses, dict(statuses) if statuses is not None else None)
        self._columns: dict[str, int] = {}
        self._cells: dict[str, dict[str, Text | str]] = {}

    def compose(self) -> ComposeResult:
        table: DataTable = DataTable(
            cursor_type="row", zebra_stripes=False, show_cursor=True, id="nodes-table"
        )
        table.display = False
        yield table
        # one line from the first frame (a wrapped placeholder would shift the layout once sized)
        yield NodeSummary(
            nodes_summary(self.statuses, theme_colors(self.app)), id="nodes-summary", markup=False
        )

    def on_mount(self) -> None:
        on_theme_change(self, self._rebuild)
        self._render_statuses()
        self.set_interval(1.0, self._render_statuses)  # "since" moves on between probes (changed cells only)

    def on_resize(self) -> None:
        self.call_after_refresh(self._render_statuses)  # the summary's width is known then

    # -- state -----------------------------------------------------------------------------

    def update_statuses(self, statuses: Mapping[str, NodeStatus] | None) -> None:
        self.statuses = dict(statuses) if statuses is not None else None

    def watch_statuses(self) -> None:
        self._render_statuses()

    @property
    def one_line(self) -> bool:
        height = self.styles.height
        return height is not None and not height.is_auto and height.value <= 1

    @property
    def selected(self) -> str | None:
        """The node under the cursor."""
        table = self.query_one(DataTable)
        if not table.row_count or not table.display:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return key.value

    def _rebuild(self) -> None:
        self._columns = {}
        self._render_statuses()

    def _render_statuses(self) -> None:
        if not self.is_mounted:
            return
        statuses = self.statuses or {}
        try:
            table, summary = self.query_one(DataTable), self.query_one(NodeSummary)
        except NoMatches:  # a probe result that lands while the app closes: the children are gone
            return
        if not statuses or self.one_line:
            table.display = False
            summary.display = True
            width = summary.content_size.width or self.content_size.width or 40
            summary.show(nodes_summary(statuses, theme_colors(self.app), width))
            return
        summary.display = False
        table.display = True
        width = self.content_size.width or self.size.width or 80
        columns = choose_columns(width, skip=RAY_SKIPPED if _ray_only(statuses) else ())
        if columns != self._columns or set(statuses) != set(self._cells):
            self._rebuild_table(table, columns, statuses)
            return
        now = self.clock()
        colors = theme_colors(self.app)
        for name, status in statuses.items():
            cells = node_cells(status, now, colors)
            old = self._cells[name]
            for key in columns:
                if old.get(key) != cells[key]:
                    table.update_cell(name, key, cells[key])
            self._cells[name] = cells

    def _rebuild_table(
        self, table: DataTable, columns: dict[str, int], statuses: Mapping[str, NodeStatus]
    ) -> None:
        selected = self.selected
        table.clear(columns=True)
        self._columns = columns
        for key, width in columns.items():
            label = "In use" if key == "error" and _ray_only(statuses) else COLUMNS[key][0]
            justify: JustifyMethod = "right" if key in ("rtt", "load", "mem", "jobs", "since") else "left"
            table.add_column(Text(label, justify=justify), width=width, key=key)
        now = self.clock()
        colors = theme_colors(self.app)
        self._cells = {}
        for name in sorted(statuses):
            cells = node_cells(statuses[name], now, colors)
            self._cells[name] = cells
            table.add_row(*(cells[k] for k in columns), key=name)
        if selected in self._cells:
            table.move_cursor(row=table.get_row_index(selected))
        table.styles.height = min(len(statuses) + 1, MAX_ROWS + 1)  # the header and one line a node

    # -- actions ---------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#nodes-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.NodeSelected(self, event.row_key.value))

    def open_worst(self) -> None:
        statuses = self.statuses or {}
        if not statuses:
            return
        worst = min(statuses.values(), key=lambda s: (SEVERITY.get(s.state, 9), s.name))
        self.post_message(self.NodeSelected(self, worst.name))

    def action_retry(self) -> None:
        self.post_message(self.RetryRequested(self.selected))
