"""The dashboard: header, job queue, score plot and the (reserved) GPU and node panels.

It owns one `ExperimentState` and hands it to its widgets. The state changes from:

- engine events (an experiment this process runs): the `EngineBridge` posts one
  `EngineEvents` per batch, the screen drains and applies the batch, at most ~20 times a second;
- store snapshots (watch mode, or an experiment from the store): a thread worker polls
  `changed_since` and reads the store only when it changed; the next poll is scheduled after
  the previous one finished, so a slow read never piles up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from aup_tui_backends.monitors.nodes import NodeState
from aup_tui_backends.status import ExperimentStatus, JobStatus
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Static
from textual.widgets.data_table import RowDoesNotExist

from ..messages import EngineEvents, StoreSnapshot
from ..monitoring import GPUSampled, Monitoring, NodesProbed, monitoring_for
from ..sources import EngineBridge, LiveSource, StoreSource
from ..state import Changes, ExperimentState, PassiveWant
from ..widgets.gpu_panel import GPUPanel
from ..widgets.header import ExperimentHeader
from ..widgets.job_table import JobTable, format_params
from ..widgets.nodes_panel import NodesPanel
from ..widgets.score_plot import ScorePlot
from .dashboard_commands import DashboardCommands
from .dashboard_continue import ContinueActions

POLL_INTERVAL = 0.5  # seconds between store reads in watch mode (after the previous one ended)
MIN_BATCH_INTERVAL = 0.05  # at most ~20 state updates a second
NARROW = 140  # below this width the plot and panels go under the job table


#: what `aup-tui watch --readonly` hides and disables: every key that stops, answers or starts a job
READONLY_HIDDEN = frozenset({"stop_job", "stop_experiment", "answer_passive", "resume", "rerun_failed"})

#: the engine's StoreProblem notices (aup_tui_backends.experiment): shown as a banner until resolved
STORE_DOWN, STORE_UP = "store can't be written", "store can be written again"


def no_match_text(text: str, status: str | None) -> str:
    """What an empty filter result says: what matched nothing, and how to get the jobs back."""
    jobs = f"{status.lower()} jobs" if status else "jobs"
    match = f" match '{text}'" if text else ""
    return f"no {jobs}{match} — esc clears the filter" + ("" if text else ", f shows the next status")


class DashboardScreen(ContinueActions, Screen):
    """One experiment, live. `source` carries stop requests and passive answers (None: read-only)."""

    CSS_PATH = "dashboard.tcss"
    COMMANDS = {DashboardCommands}
    BINDINGS = [
        Binding("s", "stop_job", "Stop job", id="dashboard.stop_job"),
        Binding("S", "stop_experiment", "Stop exp.", id="dashboard.stop_experiment"),
        Binding("enter", "open_job", "Open", id="dashboard.open"),
        Binding("slash", "filter", "Filter", id="dashboard.filter"),
        Binding("escape", "back", "Back", show=False, id="dashboard.back"),
        Binding("p", "answer_passive", "Answer job", id="dashboard.passive"),
        Binding("E", "experiments", "Experiments", show=False, id="dashboard.experiments"),
        Binding("e", "export", "Export jobs (CSV)", show=False, id="dashboard.export"),
        Binding("x", "plot_axis", "Plot x axis", show=False, id="dashboard.plot_axis"),
        Binding("a", "analysis", "Parameter analysis", show=False, id="dashboard.analysis"),
        Binding("exclamation_mark", "problems", "Problems", show=False, id="dashboard.problems"),
        Binding("R", "resume", "Resume", id="dashboard.resume"),
        Binding("ctrl+r", "rerun_failed", "Re-run failed", id="dashboard.rerun_failed"),
    ]

    def __init__(
        self,
        state: ExperimentState,
        clock: Callable[[], float] = time.time,
        *,
        source: LiveSource | StoreSource | None = None,
        bridge: EngineBridge | None = None,
        connector: Any = None,
        poll: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.state = state
        self.clock = clock
        self.source = source
        self.bridge = bridge
        self.connector = connector
        self.poll = poll
        self._stamp: tuple | None = None
        self._last_batch = 0.0
        self._batch_timer: Timer | None = None
        self._dismissed_passive: set[int] = set()
        self._passive_open: int | None = None
        self._filter_timer: Timer | None = None
        self._loaded = False
        self._keys_shown: tuple[object, ...] | None = None
        self.monitoring: Monitoring | None = None  # set on mount (None in demos)

    # -- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield ExperimentHeader(self.state, self.clock, id="header")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield JobTable(self.state, self.clock, id="jobs")
                yield Static(id="no-match")
                yield Input(
                    placeholder="/ filter: words or column<op>value, e.g. 'failed cpu1 x>0.5' — enter keeps, escape clears",
                    id="filter",
                )
            with Vertical(id="right"):
                yield ScorePlot(id="plot")
                with Horizontal(id="panels"):
                    yield GPUPanel(id="gpu-panel", classes="panel")
                    yield NodesPanel(clock=self.clock, id="nodes-panel", classes="panel")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        plot = self.query_one(ScorePlot)
        plot.border_title = "Scores"
        axis = getattr(self.app, "prefs", {}).get("plot_axis")
        if axis in ScorePlot.X_AXES:
            plot.x_axis = axis
        self.query_one("#jobs").border_title = "Jobs"
        self.query_one("#gpu-panel").border_title = "GPUs"
        self.query_one("#nodes-panel").border_title = "Nodes"
        self.monitoring = monitoring_for(self)  # the GPU and node monitors (None in demos)
        self.query_one("#filter").display = False
        self._update_plot()
        self.query_one(JobTable).focus()
        self._ticker = self.set_interval(1.0, self._tick, pause=not self.state.is_live)
        if self.bridge is not None:
            self.bridge.attach(self)
        if self.poll:
            self._poll_store()
        self._offer_passive()

    def on_job_table_filter_changed(self, message: JobTable.FilterChanged) -> None:
        parts = []
        if message.status:
            parts.append(message.status.lower())
        if message.text:
            parts.append(f"'{message.text}'")
        title = "Jobs"
        if parts:
            title += f" {message.shown} of {message.total} · " + " · ".join(parts)
        self.query_one(JobTable).border_title = title
        no_match = self.query_one("#no-match", Static)
        no_match.display = bool(parts) and not message.shown
        if no_match.display:
            no_match.update(no_match_text(message.text, message.status))

    def on_resize(self) -> None:
        self.set_class(self.size.width < NARROW, "-narrow")
        self.set_class(self.size.height >= 40, "-tall")

    # -- state updates --------------------------------------------------------------------

    def on_engine_events(self, message: EngineEvents) -> None:
        message.stop()
        wait = MIN_BATCH_INTERVAL - (time.monotonic() - self._last_batch)
        if wait > 0:
            if self._batch_timer is None:
                self._batch_timer = self.set_timer(wait, self._drain)
            return
        self._drain()

    def _drain(self) -> None:
        self._batch_timer = None
        if self.bridge is None:
            return
        self._last_batch = time.monotonic()
        events = self.bridge.drain()
        if events:
            self.apply_changes(self.state.apply(events))

    def apply_changes(self, ch: Changes) -> None:
        """Hand what changed to the widgets that show it."""
        if ch.jids:
            self.query_one(JobTable).update_jobs(sorted(ch.jids))
        if ch.header or ch.jids:
            self.query_one(ExperimentHeader).update_state()
        if ch.plot or self.query_one(ScorePlot).early_stopped != self.state.counts[JobStatus.EARLY_STOPPED]:
            self._update_plot()
        for level, message in ch.notices:
            timeout = 8
            if message.startswith(STORE_DOWN):  # a banner that stays until the store takes writes again
                timeout = 24 * 3600
            elif message.startswith(STORE_UP):
                self.app.clear_notifications()
            self.notify(
                message,
                severity="error" if level == "error" else "warning" if level == "warning" else "information",
                timeout=timeout,
            )
        if self.state.is_live:
            self._ticker.resume()
        else:
            self._ticker.pause()
        # s/S while it runs, p while a job waits, ! once one went wrong, R / ctrl+r once it is over
        keys = (self.state.is_live, bool(self.state.waiting), bool(self.state.problems), self.state.status)
        if keys != self._keys_shown:
            self._keys_shown = keys
            self.refresh_bindings()  # (the footer recomposes: not on every batch)
        if ch.ended:
            self._passive_open = None
            self._tell_end()
        if ch.passive:
            self._offer_passive()

    def _update_plot(self) -> None:
        st = self.state
        self.query_one(ScorePlot).set_data(
            st.score_values,
            st.best_trace,
            st.maximize,
            times=st.score_times,
            start=st.start,
            early_stopped=st.counts[JobStatus.EARLY_STOPPED],
        )

    def _tell_end(self) -> None:
        """How the experiment ended; for a FAILED one why, shown long enough to read."""
        st = self.state
        message, timeout = f"experiment {st.eid} {st.status.lower()}", 6
        if st.status == ExperimentStatus.FAILED and st.reason:
            message, timeout = f"{message}: {st.reason}", 30
        self.notify(
            message,
            timeout=timeout,
            severity="information" if st.status == ExperimentStatus.FINISHED else "warning",
        )

    def action_analysis(self) -> None:
        """Open the parameter analysis on the jobs scored so far (importance and score vs each)."""
        from .analysis import AnalysisScreen

        st = self.state
        points = [(r.jid, r.config, r.score) for r in st.jobs.values() if r.score is not None]
        experiment = getattr(self.source, "experiment", None)
        space = getattr(getattr(experiment, "config", None), "parameter_config", None)
        title = f"Parameter analysis — {st.name} #{st.eid}" if st.eid is not None else "Parameter analysis"
        self.app.push_screen(AnalysisScreen(title, points, st.maximize, st.best_jid, space))

    def action_plot_axis(self) -> None:
        """The score plot over job order or over time since the start (remembered in .aup)."""
        axis = self.query_one(ScorePlot).next_x_axis()
        remember = getattr(self.app, "remember", None)
        if remember is not None:
            remember("plot_axis", axis)
        self.notify(f"score plot over {'time since the start' if axis == 'time' else 'job order'}", timeout=2)

    def experiment_failed(self, error: str) -> None:
        """The experiment's thread raised: show it as FAILED (the error is in a notification)."""
        self.state.status = ExperimentStatus.FAILED
        self.state.end = self.clock()
        self.query_one(ExperimentHeader).update_state()
        self._ticker.pause()

    def _tick(self) -> None:
        self.query_one(JobTable).tick()

    # -- the store poller (watch mode) ----------------------------------------------------

    @work(thread=True, exclusive=True, group="store-poll")
    def _poll_store(self) -> None:
        conn, eid = self.connector, self.state.eid
        try:
            changed, self._stamp = conn.changed_since(self._stamp)
            if not changed:
                self.post_message(StoreSnapshot(None, None))
                return
            exp = conn.get_experiment(eid)
            jobs = conn.jobs(eid)
        except Exception as exc:  # a torn read or a vanished file: try again next time
            self.post_message(StoreSnapshot(None, None, error=str(exc)))
            return
        self.post_message(StoreSnapshot(exp, jobs))

    def on_store_snapshot(self, message: StoreSnapshot) -> None:
        message.stop()
        if message.jobs is not None:
            first = not self._loaded
            self.apply_changes(self.state.merge_store(message.exp, message.jobs))
            self._loaded = True
            if first and self.state.status == ExperimentStatus.FAILED:
                self._tell_end()  # opened after it failed: why, once
        # an experiment that has ended does not change any more: stop polling once it is shown
        if self.poll and self.is_attached and (self.state.is_live or not self._loaded):
            self.set_timer(POLL_INTERVAL, self._poll_store)

    # -- actions --------------------------------------------------------------------------

    @property
    def selected_jid(self) -> int | None:
        return self.query_one(JobTable).selected_jid

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """Hide keys that do nothing now (False hides them from the footer and disables them)."""
        if action in READONLY_HIDDEN and getattr(self.app, "readonly", False):
            return False  # `watch --readonly`: looking only
        if action in ("stop_job", "stop_experiment"):
            return self.source is not None and self.state.is_live
        if action == "answer_passive":
            return bool(self.state.waiting) and self.source is not None
        if action == "experiments":
            return self.connector is not None and not isinstance(self.source, LiveSource)
        if action == "export":
            return self.connector is not None and self.state.eid is not None
        if action == "problems":
            return bool(self.state.problems)
        if action == "resume":
            return self.resume_applies()
        if action == "rerun_failed":
            return self.rerun_failed_applies()
        return True

    def action_stop_job(self) -> None:
        jid = self.selected_jid
        if jid is None or self.source is None:
            self.notify("no job selected", severity="warning")
            return
        self.ask_stop_job(jid)

    def can_stop_job(self, jid: int) -> bool:
        """Whether job `jid` runs and this view can stop it (the job detail's `s`)."""
        row = self.state.jobs.get(jid)
        return self.check_action("stop_job", ()) is True and row is not None and JobStatus(row.status).is_live

    def ask_stop_job(self, jid: int) -> None:
        """Ask, then stop job `jid` (the dashboard's `s` and the job detail's)."""
        row = self.state.jobs.get(jid)
        if row is None:
            self.notify(f"job {jid} is not in this experiment", severity="warning")
            return
        if not JobStatus(row.status).is_live:
            self.notify(f"job {jid} is not running (it is {row.status.lower()})", severity="warning")
            return
        from .confirm import ConfirmScreen

        params = format_params(row.config)
        question = (
            f"Stop job {jid}" + (f" ({params})" if params else "") + f" on {row.resource or 'its resource'}?"
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.notify(f"stopping job {jid}…", timeout=3)
                self._request_stop(jid)

        self.app.push_screen(ConfirmScreen(question, yes_label="Stop job", no_label="Keep running"), answered)

    def action_stop_experiment(self) -> None:
        if self.source is None:
            return
        from .confirm import ConfirmScreen

        st = self.state
        question = (
            f"Stop experiment '{st.name}' #{st.eid}? Its {st.running} running job(s) are killed "
            "and it ends STOPPED."
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.notify("stopping the experiment: killing running jobs…", timeout=4)
                self._request_stop(None)

        self.app.push_screen(
            ConfirmScreen(question, yes_label="Stop experiment", no_label="Keep running"), answered
        )

    @work(thread=True, group="requests")
    def _request_stop(self, jid: int | None) -> None:
        source = self.source
        if source is None:  # the keys are hidden then (check_action)
            return
        try:
            if jid is None:
                source.stop_experiment()
            else:
                source.stop_job(jid)
        except Exception as exc:
            self.app.call_from_thread(self.notify, f"could not stop: {exc}", severity="error")

    def action_open_job(self) -> None:
        jid = self.selected_jid
        if jid is not None:
            self.open_job_detail(jid)

    def open_job_detail(self, jid: int, *, replace: bool = False) -> None:
        """Open job `jid`'s detail (over the current screen, or in place of it with `replace`)."""
        conn = self.connector
        if conn is None and isinstance(self.source, LiveSource):
            conn = self.source.experiment.connector
        if conn is None or self.state.eid is None:
            self.notify(f"job {jid}: no store to read its details from", severity="warning")
            return
        from .job_detail import JobDetailScreen

        detail = JobDetailScreen(conn, self.state.eid, jid, host=self)
        if replace:
            self.app.switch_screen(detail)
        else:
            self.app.push_screen(detail)

    def neighbour_jid(self, jid: int, step: int) -> int | None:
        """The job `step` rows below (above, negative) `jid` in the job table as shown now; the
        table's cursor moves there so the dashboard shows it selected on return."""
        table = self.query_one(JobTable)
        try:
            index = table.get_row_index(str(jid)) + step
        except RowDoesNotExist:  # not shown (filtered out): start from the selected row
            index = table.cursor_row
        if not 0 <= index < table.row_count:
            return None
        table.move_cursor(row=index, animate=False)
        return table.selected_jid

    def action_problems(self) -> None:
        """What went wrong so far, newest first (the header counts them)."""
        from .problems import ProblemsScreen

        self.app.push_screen(ProblemsScreen(self.state, self.open_job_detail))

    @on(DataTable.RowSelected, "#jobs")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_job()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        self._filter_timer = self.set_timer(0.15, lambda: self.query_one(JobTable).set_filter(event.value))

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        self.query_one(JobTable).set_filter(event.value)
        if not event.value.strip():
            event.input.display = False
        self.query_one(JobTable).focus()

    def action_back(self) -> None:
        box = self.query_one("#filter", Input)
        table = self.query_one(JobTable)
        if box.display or table.filter_text or table.filter_status:
            box.value = ""
            box.display = False
            table.set_filter("", None)
            table.focus()
            return
        if len(self.app.screen_stack) > 2 and self.connector is not None:
            self.app.pop_screen()

    def action_experiments(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
            return
        from .picker import PickerScreen

        self.app.switch_screen(PickerScreen(self.connector, clock=self.clock))

    def action_export(self) -> None:
        """Write the jobs as `aup-tui export` does (its default file, in the current folder)."""
        if self.connector is None or self.state.eid is None:
            self.notify("no store to export the jobs from", severity="warning")
            return
        self._export(self.state.eid, self.state.name)

    @work(thread=True, group="export")
    def _export(self, eid: int, name: str) -> None:
        from aup_tui_backends.errors import AupError
        from aup_tui_backends.export import default_filename, write_export

        path = os.path.abspath(default_filename(eid, name, "csv"))
        try:
            count = write_export(self.connector, eid, path, "csv")
        except Exception as exc:  # noqa: BLE001 — a failed export must not end a running experiment's view
            why = str(exc) if isinstance(exc, AupError) else f"{type(exc).__name__}: {exc}"
            self.app.call_from_thread(self.notify, f"export failed: {why}", severity="error", timeout=10)
            return
        jobs = f"{count} job{'' if count == 1 else 's'}"
        self.app.call_from_thread(self.notify, f"exported {jobs} to {path}", timeout=10)

    # -- passive jobs ---------------------------------------------------------------------

    def _offer_passive(self) -> None:
        """Open the form for the next waiting job unless one is open or the person closed it."""
        if self.source is None or self._passive_open is not None or not self.state.waiting:
            return
        if getattr(self.app, "readonly", False):  # the person only watches: no form pops up
            return
        pending = [j for j in sorted(self.state.waiting) if j not in self._dismissed_passive]
        if pending and self.app.screen is self:
            self.app.bell()  # the person is the resource: call them
            self._open_passive(self.state.waiting[pending[0]])

    def action_answer_passive(self) -> None:
        if not self.state.waiting:
            self.notify("no passive job is waiting")
            return
        self._dismissed_passive.clear()
        self._open_passive(self.state.waiting[min(self.state.waiting)])

    def _open_passive(self, want: PassiveWant) -> None:
        from .passive_form import PassiveForm, PassiveRequest

        self._passive_open = want.jid

        def closed(result: str | None) -> None:
            self._passive_open = None
            if result in ("submitted", "failed"):
                self.state.waiting.pop(want.jid, None)
                self.query_one(ExperimentHeader).update_state()
                self._keys_shown = None
                self.refresh_bindings()
                self.call_after_refresh(self._offer_passive)
            else:
                self._dismissed_passive.add(want.jid)
                self.query_one(ExperimentHeader).update_state()

        source = self.source
        if source is None:  # _offer_passive and the key ask for one first
            return
        self.app.push_screen(
            PassiveForm(PassiveRequest.from_event(want), source.submit, source.mark_failed), closed
        )

    # -- the live GPU and node panels (aup_tui/monitoring.py) --------------------------------

    def on_gpu_sampled(self, message: GPUSampled) -> None:
        message.stop()
        self.query_one(GPUPanel).update_snapshot(message.snapshot)

    def on_nodes_probed(self, message: NodesProbed) -> None:
        message.stop()
        self.query_one(NodesPanel).update_statuses(message.statuses)
        self.query_one(GPUPanel).update_nodes(message.statuses)
        down = [s for s in message.statuses.values() if s.state == NodeState.DOWN]
        if [s for s in down if self.state.node_down(s.display_name, s.error, s.since)]:
            self.apply_changes(Changes(header=True))  # the header's count, the `!` key

    def on_nodes_panel_node_selected(self, message: NodesPanel.NodeSelected) -> None:
        message.stop()
        self.open_node(message.node)

    def on_nodes_panel_retry_requested(self, message: NodesPanel.RetryRequested) -> None:
        message.stop()
        self.probe_nodes(message.node)

    @property
    def node_names(self) -> list[str]:
        return sorted(self.query_one(NodesPanel).statuses or {})

    def open_node(self, name: str) -> None:
        """Push the node detail of `name`."""
        status = (self.query_one(NodesPanel).statuses or {}).get(name)
        if status is not None:
            from .node_detail import NodeDetailScreen

            self.app.push_screen(NodeDetailScreen(status, self.monitoring, clock=self.clock))

    def probe_nodes(self, name: str | None = None) -> None:
        monitoring = self.monitoring
        if monitoring is None:
            self.notify("no node monitor is running", severity="warning")
            return
        monitoring.retry(name)
        self.notify(f"probing {name or 'every node'}…", timeout=2)

    def action_probe_nodes(self) -> None:
        self.probe_nodes(None)

    def on_unmount(self) -> None:
        if self.monitoring is not None:
            self.monitoring.unsubscribe(self)

    def on_screen_resume(self) -> None:
        self.call_after_refresh(self._offer_passive)
