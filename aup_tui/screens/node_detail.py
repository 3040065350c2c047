"""One SSH node in detail: its state and figures, the history of its state changes, its last
error, its GPUs and the raw output of the last probe. Follows new probes while it is open.

`NodeDetailScreen(status, monitor=None)`: `monitor` is the app's `Monitoring` (or anything with
`subscribe(target)`, `unsubscribe(target)` and `retry(name)`); without one the screen shows the
status it was given and can be updated with `update_status`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from aup_tui_backends.monitors.nodes import NodeState, NodeStatus
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from ..monitoring import NodesProbed
from ..widgets.colors import fmt_since, on_theme_change, state_color, theme_colors
from ..widgets.gpu_panel import GPUPanel
from ..widgets.nodes_panel import GIB
from ..widgets.vim import vim_bindings
from .palette import PaletteCommand, ScreenCommands


def fmt_time(stamp: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp)) if stamp else "—"


class NodeDetailCommands(ScreenCommands["NodeDetailScreen"]):
    """The node detail's actions by name."""

    def commands(self) -> Iterator[PaletteCommand]:
        screen = self.owner
        if getattr(screen.monitor, "retry", None) is not None:
            yield PaletteCommand(
                f"Probe {screen.node} now", "probe this node now, ignoring backoff (r)", screen.action_retry
            )
        yield PaletteCommand("Back", "to the dashboard (escape)", screen.action_back)


class NodeDetailScreen(Screen):
    """A node's details; `escape` goes back to the dashboard."""

    CSS_PATH = "node_detail.tcss"
    COMMANDS = {NodeDetailCommands}
    BINDINGS = [
        Binding("escape", "back", "Back", id="node_detail.back"),
        Binding("r", "retry", "Probe now", id="node_detail.retry"),
        *vim_bindings({"down": "scroll(1)", "up": "scroll(-1)"}, "Scroll"),
    ]

    def __init__(
        self,
        status: NodeStatus,
        monitor: Any = None,
        clock: Callable[[], float] = time.time,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.status = status
        self.monitor = monitor
        self.clock = clock

    @property
    def node(self) -> str:
        return self.status.name

    def compose(self) -> ComposeResult:
        yield Static(id="node-title")
        with Horizontal(id="node-top"):
            yield Static(id="node-history", classes="node-box")
            yield Static(id="node-error", classes="node-box")
        yield GPUPanel(local=False, id="node-gpus", classes="node-box")
        with VerticalScroll(id="node-output-box", classes="node-box"):
            yield Static(id="node-output", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#node-history").border_title = "State history"
        self.query_one("#node-error").border_title = "Last error"
        self.query_one("#node-gpus").border_title = "GPUs"
        self.query_one("#node-output-box").border_title = "Last probe output"
        on_theme_change(self, self._show)
        self._show()
        self.set_interval(1.0, self._show)  # "for 12s" moves on between probes
        if self.monitor is not None and hasattr(self.monitor, "subscribe"):
            self.monitor.subscribe(self)

    def on_unmount(self) -> None:
        if self.monitor is not None and hasattr(self.monitor, "unsubscribe"):
            self.monitor.unsubscribe(self)

    # -- updates ---------------------------------------------------------------------------

    def on_nodes_probed(self, message: NodesProbed) -> None:
        message.stop()
        status = message.statuses.get(self.node)
        if status is not None:
            self.update_status(status)

    def update_status(self, status: NodeStatus) -> None:
        if status == self.status:
            return
        self.status = status
        self._show()

    def _show(self) -> None:
        st = self.status
        colors = theme_colors(self.app)
        muted = colors.get("status-queued", "grey50")
        now = self.clock()

        title = Text(no_wrap=True, overflow="ellipsis")
        title.append(st.display_name, style="bold")
        title.append(f"  {st.host}  ", style=muted)
        title.append(
            " — " if st.state is NodeState.UNKNOWN else str(st.state),
            style=f"bold {state_color(colors, st.state)}",
        )
        if st.state is not NodeState.UNKNOWN:
            title.append(f" for {fmt_since(now - st.since)}", style=muted)
        figures = []
        if st.rtt is not None:
            figures.append(f"RTT {st.rtt * 1000:.0f} ms")
        if st.load is not None:
            figures.append("load " + " ".join(f"{v:.2f}" for v in st.load))
        if st.mem_total:
            figures.append(f"mem {(st.mem_used or 0) / GIB:.1f}/{st.mem_total / GIB:.1f} GiB")
        figures.append(f"jobs {st.jobs}")
        if st.usage:  # a Ray node: its CPUs and GPUs in use
            figures.append(st.usage)
        title.append("  ·  " + "  ·  ".join(figures))
        self.query_one("#node-title", Static).update(title)

        history = Text()
        if not st.history:
            history.append("not probed yet", style=muted)
        for change in reversed(st.history):  # newest first
            if history.plain:
                history.append("\n")
            history.append(fmt_time(change.at) + " ", style=muted)
            history.append(f"{change.state:<4}", style=f"bold {state_color(colors, change.state)}")
            if change.reason:
                history.append(f" {change.reason}")
        checked = Text("\n")
        checked.append(f"last probe {fmt_time(st.checked)}", style=muted)
        if st.failures:
            checked.append(f" · {st.failures} failed in a row", style=colors.get("status-failed", "red"))
        if st.next_probe is not None:
            checked.append(f" · next {fmt_time(st.next_probe)}", style=muted)
        history.append_text(checked)
        self.query_one("#node-history", Static).update(history)

        error = Text()
        if st.error:
            error.append(st.error, style=colors.get("status-failed", "red"))
        elif st.last_error:
            error.append("recovered from: ", style=muted)
            error.append(st.last_error)
        else:
            error.append("none", style=muted)
        if st.gpu_error:
            error.append("\nnvidia-smi: ", style=muted)
            error.append(st.gpu_error, style=colors.get("status-failed", "red"))
        self.query_one("#node-error", Static).update(error)

        gpus = self.query_one(GPUPanel)
        gpus.update_nodes({st.name: st} if st.gpus or st.gpu_error else {})
        if st.output:
            output = st.output.rstrip("\n")
        elif st.state is NodeState.DOWN:
            output = "(no output: the last probe failed — see the last error)"
        else:
            output = "(no output yet: the node has not answered a probe)"
        self.query_one("#node-output", Static).update(output)

    # -- actions ---------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_retry(self) -> None:
        retry = getattr(self.monitor, "retry", None)
        if retry is None:
            self.notify("no node monitor is running", severity="warning")
            return
        retry(self.node)
        self.notify(f"probing {self.node}…", timeout=2)

    def action_scroll(self, lines: int) -> None:
        box = self.query_one("#node-output-box", VerticalScroll)
        box.scroll_relative(y=lines, animate=False)
