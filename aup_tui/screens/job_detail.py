"""One job up close: parameters, attempts, its intermediate results as a curve and its live log.

And what a person does with it there: stop it, step to the next or previous job of the dashboard's
table, copy its config or command line, run its config again (once its experiment is over), read
its log full screen. Stopping and stepping go through
the screen that opened it (`JobDetailHost`, the dashboard), so they follow the dashboard's rules.

All reading (store and log file) happens in one thread worker that reads, posts what changed
as messages, then waits `poll_interval` before the next read — so a slow disk never piles reads
up behind each other and the event loop only ever renders.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from aup_tui_backends.jobs import log_relpath, passive_command
from aup_tui_backends.status import JobStatus
from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Input, Static
from textual.worker import get_current_worker

from ..widgets.attempts_table import AttemptsTable
from ..widgets.colors import on_theme_change, status_color, theme_colors
from ..widgets.log_view import FileTail, LogView
from ..widgets.result_curve import ResultCurve
from ..widgets.vim import vim_bindings
from .palette import PaletteCommand, ScreenCommands


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class JobDetailHost(Protocol):
    """What the screen that opens a job detail (the dashboard) does for it."""

    def can_stop_job(self, jid: int) -> bool:
        """Whether job `jid` runs and can be stopped from here."""
        ...

    def ask_stop_job(self, jid: int) -> None:
        """Ask, then stop job `jid`, as the dashboard's own stop key does."""
        ...

    def neighbour_jid(self, jid: int, step: int) -> int | None:
        """The job `step` rows from `jid` in the dashboard's table (None past either end)."""
        ...

    def open_job_detail(self, jid: int, *, replace: bool = False) -> None:
        """Open job `jid`'s detail, in place of this one with `replace`."""
        ...

    def can_rerun_job(self, jid: int) -> bool:
        """Whether job `jid` has ended in an experiment that is over, so it can run again."""
        ...

    def rerun_job(self, jid: int) -> None:
        """Ask, then run job `jid`'s config again as its next attempt."""
        ...


class JobDetailCommands(ScreenCommands["JobDetailScreen"]):
    """The job detail's actions by name."""

    def commands(self) -> Iterator[PaletteCommand]:
        screen = self.owner
        if self.allows("stop_job"):
            yield PaletteCommand("Stop this job", "ask this job to stop (s)", screen.action_stop_job)
        if self.allows("next_job"):
            yield PaletteCommand(
                "Next job", "the job below in the dashboard's table (])", screen.action_next_job
            )
            yield PaletteCommand(
                "Previous job", "the job above in the dashboard's table ([)", screen.action_previous_job
            )
        if self.allows("rerun_job"):
            yield PaletteCommand(
                "Re-run this job's config",
                "run it again as this job's next attempt, in its experiment (R)",
                screen.action_rerun_job,
            )
        if self.allows("copy_config"):
            yield PaletteCommand(
                "Copy config",
                "this job's parameters as JSON, to the clipboard (c)",
                screen.action_copy_config,
            )
        if self.allows("copy_command"):
            yield PaletteCommand(
                "Copy command line",
                "the command that runs this job, to the clipboard (C)",
                screen.action_copy_command,
            )
        yield PaletteCommand(
            "Log: full screen" if not screen.log_full_screen else "Log: with the job's details",
            "the log alone on the screen, or back beside the details (l)",
            screen.action_toggle_log,
        )
        following = screen.query_one("#detail-log", LogView).auto_scroll
        yield PaletteCommand(
            "Log: stop following" if following else "Log: follow",
            "keep the end of the log in view as it grows, or not (f)",
            screen.action_toggle_follow,
        )
        yield PaletteCommand("Log: top", "the first lines of the log (g)", screen.action_log_start)
        yield PaletteCommand("Log: bottom", "the last lines of the log, following (G)", screen.action_log_end)
        yield PaletteCommand(
            "Log: search", "find text in the log; n / N: next / previous (/)", screen.action_search
        )
        yield PaletteCommand("Back", "to the screen underneath (escape)", screen.action_back)


class JobDetailScreen(Screen[None]):
    """The detail of job `jid` of experiment `eid`, read from `connector` (a TinyDBConnector)."""

    CSS_PATH = "job_detail.tcss"
    COMMANDS = {JobDetailCommands}
    BINDINGS = [
        Binding("escape", "back", "Back", id="detail.back"),
        Binding("s", "stop_job", "Stop job", id="detail.stop_job"),
        Binding("left_square_bracket", "previous_job", "Prev job", id="detail.previous_job"),
        Binding("right_square_bracket", "next_job", "Next job", id="detail.next_job"),
        Binding("c", "copy_config", "Copy config", id="detail.copy_config"),
        Binding("C", "copy_command", "Copy command", show=False, id="detail.copy_command"),
        Binding("R", "rerun_job", "Re-run job", id="detail.rerun_job"),
        Binding("l", "toggle_log", "Full log", id="detail.toggle_log"),
        Binding("f", "toggle_follow", "Follow log", id="detail.follow"),
        Binding("slash", "search", "Search log", id="detail.search"),
        Binding("n", "search_next", "Next match", show=False, id="detail.search_next"),
        Binding("N", "search_previous", "Previous match", show=False, id="detail.search_previous"),
        *vim_bindings({"top": "log_start", "bottom": "log_end", "down": "log_down", "up": "log_up"}, "Log"),
    ]

    class Snapshot(Message):
        """The job as the store has it now."""

        def __init__(
            self, job: dict, results: list[dict], labels: list[str], now: float, command: str = ""
        ) -> None:
            super().__init__()
            self.job, self.results, self.labels, self.now = job, results, labels, now
            self.command = command  # the command line that runs the job ("" when unknown)

    class LogAttempt(Message):
        """The log now followed is attempt `attempt`'s (`relpath` under the working folder)."""

        def __init__(self, attempt: int, resource: str, relpath: str, first: bool) -> None:
            super().__init__()
            self.attempt, self.resource, self.relpath, self.first = attempt, resource, relpath, first

    class LogText(Message):
        """New text at the end of the followed log, after `skipped_lines` lines too many to show."""

        def __init__(self, text: str, skipped_lines: int = 0) -> None:
            super().__init__()
            self.text, self.skipped_lines = text, skipped_lines

    class Ended(Message):
        """The job is final and its log complete: nothing more will be read."""

    class Problem(Message):
        """The store could not be read (shown; the worker keeps trying)."""

        def __init__(self, message: str) -> None:
            super().__init__()
            self.message = message

    def __init__(
        self,
        connector,
        eid: int,
        jid: int,
        *,
        poll_interval: float = 0.5,
        clock: Callable[[], float] = time.time,
        host: JobDetailHost | None = None,
        name: str | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id)
        self.connector = connector
        self.eid = eid
        self.jid = jid
        self.host = host
        self.command = ""
        self.poll_interval = poll_interval
        self.clock = clock
        self.job: dict | None = None
        self.ended = False
        self._stop_reading = threading.Event()
        self._last_snapshot: JobDetailScreen.Snapshot | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"Job {self.jid} · loading…", id="detail-title")
        with Horizontal(id="detail-top"):
            with VerticalScroll(id="detail-params") as params:
                params.border_title = "Parameters"
                yield Static("", id="detail-params-text")
            curve = ResultCurve(id="detail-curve")
            curve.border_title = "Intermediate results"
            yield curve
        table = AttemptsTable(id="detail-attempts")
        table.border_title = "Attempts"
        yield table
        yield Static("", id="detail-error", markup=False)
        log = LogView(id="detail-log", placeholder="no output yet")
        log.border_title = "Log"
        yield log
        with Horizontal(id="detail-search"):
            yield Input(placeholder="search the log (enter: find, esc: close)", id="detail-search-input")
            yield Static("", id="detail-search-status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#detail-log", LogView).focus()
        on_theme_change(self, self._repaint_status)
        self._follow()

    def on_unmount(self) -> None:
        self._stop_reading.set()

    # -- the reader (a thread) ----------------------------------------------------------

    @work(thread=True, exclusive=True, group="job-detail", exit_on_error=False)
    def _follow(self) -> None:
        worker = get_current_worker()
        conn, eid, jid = self.connector, self.eid, self.jid
        stop_reading = self._stop_reading
        workingdir: str | None = None
        labels: list[str] = []
        command = ""
        tail: FileTail | None = None
        attempt: int | None = None
        last_key: Any = None
        last_post = 0.0
        quiet = 0
        while not (worker.is_cancelled or stop_reading.is_set()):
            try:
                if workingdir is None:
                    exp = conn.get_experiment(eid) or {}
                    workingdir = exp.get("workingdir") or "."
                    labels = list(conn.get_labels(eid) or [])
                    script = exp.get("script") or ""
                    command = passive_command(workingdir, script, jid) if script else ""
                job = conn.get_job(jid, eid)
                results = conn.intermediate_results(eid, jid) if job is not None else []
            except Exception as exc:  # a store mid-write or gone: say so and try again
                self.post_message(self.Problem(f"cannot read the store: {exc}"))
                stop_reading.wait(self.poll_interval * 4)
                continue
            if job is None:  # queued, not started yet
                stop_reading.wait(self.poll_interval)
                continue
            now = self.clock()
            final = JobStatus(job["status"]).is_final
            key = (repr(job), len(results))
            if key != last_key or (not final and now - last_post >= 1.0):
                self.post_message(self.Snapshot(job, results, labels, now, command))
                last_post = now
            attempts = job.get("attempts") or []
            text = ""
            if attempts and attempts[-1].get("attempt") != attempt:
                if tail is not None:  # the previous attempt's last words
                    skipped = tail.skipped_lines
                    rest = (tail.read() or "") + tail.flush()
                    if rest:
                        self.post_message(self.LogText(rest, max(0, tail.skipped_lines - skipped)))
                current = attempts[-1]
                relpath = log_relpath(jid, current.get("attempt"))
                tail = FileTail(os.path.join(workingdir, relpath))
                self.post_message(
                    self.LogAttempt(
                        current.get("attempt") or 0,
                        current.get("resource") or "",
                        relpath,
                        first=attempt is None,
                    )
                )
                attempt = current.get("attempt")
            if tail is not None:
                skipped = tail.skipped_lines
                text = tail.read() or ""
                if text:
                    self.post_message(self.LogText(text, max(0, tail.skipped_lines - skipped)))
            if final:
                quiet = quiet + 1 if (not text and key == last_key) else 0
                if quiet >= 2:  # final, and nothing moved for two reads: the log is complete
                    rest = tail.flush() if tail is not None else ""
                    if rest:
                        self.post_message(self.LogText(rest))
                    self.post_message(self.Ended())
                    return
            last_key = key
            stop_reading.wait(self.poll_interval)

    # -- rendering what the reader found ------------------------------------------------

    @on(Snapshot)
    def _on_snapshot(self, message: Snapshot) -> None:
        self._show_snapshot(message)

    def _repaint_status(self) -> None:
        """Status colours come from the theme: repaint them when it changes."""
        if self._last_snapshot is not None:
            self._show_snapshot(self._last_snapshot, force=True)

    def _show_snapshot(self, message: Snapshot, force: bool = False) -> None:
        job = message.job
        if self.job is None or self.job.get("status") != job.get("status") or not self.command:
            self.command = message.command
            self.refresh_bindings()  # `s` only while it runs, the copy keys once there is something to copy
        self.job = job
        self._last_snapshot = message
        colors = theme_colors(self.app)
        status = job.get("status", "?")
        title = Text.assemble(
            (f"Job {self.jid}", "bold"), " · ", (status, Style(bold=True, color=status_color(colors, status)))
        )
        if job.get("score") is not None:
            title.append(" · score ")
            title.append(format_value(job["score"]), style="bold")
        if job.get("resource"):
            title.append(f" · {job['resource']}")
        title.append(f" · experiment {self.eid}")
        self.query_one("#detail-title", Static).update(title)

        config = job.get("config") or {}
        width = max((len(str(k)) for k in config), default=0)
        params = Text()
        for i, (key, value) in enumerate(config.items()):
            if i:
                params.append("\n")
            params.append(str(key).ljust(width), style="bold")
            params.append(f"  {format_value(value)}")
        self.query_one("#detail-params-text", Static).update(
            params if config else Text("no parameters", style="dim")
        )

        self.query_one("#detail-curve", ResultCurve).set_results(
            [r.get("values") or () for r in message.results], message.labels
        )

        self.query_one(AttemptsTable).show(job.get("attempts") or [], message.now, colors, force=force)

        error = self.query_one("#detail-error", Static)
        stopped = JobStatus(job["status"]).is_stopped  # a decision, not a failure
        if job.get("error"):
            error.update(f"{'■' if stopped else '✗'} {job['error']}")
            error.add_class("-visible")
        else:
            error.remove_class("-visible")
        error.set_class(stopped, "-stopped")
        self._update_log_subtitle()

    @on(LogAttempt)
    def _show_attempt(self, message: LogAttempt) -> None:
        log = self.query_one("#detail-log", LogView)
        log.border_title = f"Log {message.relpath}"
        if message.first:
            waiting = self.job is not None and self.job.get("status") == JobStatus.WAITING
            log.show_placeholder("waiting for the person running this job…" if waiting else "no output yet")
        else:
            log.separator(f"attempt {message.attempt} on {message.resource}")

    @on(LogText)
    def _show_text(self, message: LogText) -> None:
        self.query_one("#detail-log", LogView).append(message.text, message.skipped_lines)
        self._update_log_subtitle()

    @on(Ended)
    def _show_ended(self) -> None:
        self.ended = True
        self._update_log_subtitle()

    @on(Problem)
    def _show_problem(self, message: Problem) -> None:
        self.notify(message.message, severity="warning", timeout=4)

    def _update_log_subtitle(self) -> None:
        log = self.query_one("#detail-log", LogView)
        if self.ended or (self.job and JobStatus(self.job["status"]).is_final):
            state = "ended"
        else:
            state = "following" if log.auto_scroll else "paused (f follows)"
        if log.dropped_lines:
            state = f"showing the last {log.line_count:,} of {log.total_lines:,} lines · {state}"
        if log.border_subtitle != state:
            log.border_subtitle = state

    # -- actions ------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """Offer only what applies now (False hides the key from the footer and disables it)."""
        if action == "stop_job":
            return self.host is not None and self.host.can_stop_job(self.jid)
        if action in ("next_job", "previous_job"):
            return self.host is not None
        if action == "rerun_job":
            return self.host is not None and self.host.can_rerun_job(self.jid)
        if action == "copy_config":
            return self.job is not None
        if action == "copy_command":
            return bool(self.command)
        return True

    def action_stop_job(self) -> None:
        if self.host is not None:
            self.host.ask_stop_job(self.jid)

    def action_rerun_job(self) -> None:
        if self.host is not None:
            self.host.rerun_job(self.jid)

    def action_next_job(self) -> None:
        self._step(1)

    def action_previous_job(self) -> None:
        self._step(-1)

    def _step(self, step: int) -> None:
        """Show the next (previous) job of the dashboard's table in place of this one."""
        if self.host is None:
            return
        jid = self.host.neighbour_jid(self.jid, step)
        if jid is None:
            self.notify(f"job {self.jid} is the {'last' if step > 0 else 'first'} in the table", timeout=2)
            return
        self.host.open_job_detail(jid, replace=True)

    def action_copy_config(self) -> None:
        """This job's parameters as JSON, to the clipboard (OSC 52: works over SSH too)."""
        if self.job is None:
            return
        self.app.copy_to_clipboard(json.dumps(self.job.get("config") or {}, indent=2, default=str))
        self.notify(f"copied job {self.jid}'s config (JSON) to the clipboard", timeout=3)

    def action_copy_command(self) -> None:
        if not self.command:
            return
        self.app.copy_to_clipboard(self.command)
        self.notify(f"copied job {self.jid}'s command line to the clipboard: {self.command}", timeout=4)

    @property
    def log_full_screen(self) -> bool:
        return self.has_class("-log-full")

    def action_toggle_log(self) -> None:
        """The log alone on the screen (focused), or back under the job's details."""
        self.set_class(not self.log_full_screen, "-log-full")
        self.query_one("#detail-log", LogView).focus()

    def action_back(self) -> None:
        """Close the search bar if open, else leave the full-screen log, else leave."""
        bar = self.query_one("#detail-search")
        if bar.has_class("-visible"):
            bar.remove_class("-visible")
            self.query_one("#detail-log", LogView).focus()
            return
        if self.log_full_screen:
            self.action_toggle_log()
            return
        self.dismiss(None)

    def action_toggle_follow(self) -> None:
        log = self.query_one("#detail-log", LogView)
        log.set_following(not log.auto_scroll)
        self._update_log_subtitle()

    def action_log_end(self) -> None:
        """The end of the log, following it again."""
        self.query_one("#detail-log", LogView).set_following(True)
        self._update_log_subtitle()

    def action_log_start(self) -> None:
        """The first lines held; following stops so new lines do not pull the view back down."""
        log = self.query_one("#detail-log", LogView)
        log.set_following(False)
        log.scroll_home(animate=False, immediate=True)
        self._update_log_subtitle()

    def action_log_down(self) -> None:
        self.query_one("#detail-log", LogView).scroll_down(animate=False)

    def action_log_up(self) -> None:
        log = self.query_one("#detail-log", LogView)
        log.set_following(False)
        log.scroll_up(animate=False)

    @on(LogView.FollowChanged)
    def _show_following(self) -> None:
        self._update_log_subtitle()

    # -- search -------------------------------------------------------------------------

    def action_search(self) -> None:
        """Open the search bar with the last query selected."""
        self.query_one("#detail-search").add_class("-visible")
        field = self.query_one("#detail-search-input", Input)
        field.focus()
        field.select_all()

    @on(Input.Changed, "#detail-search-input")
    def _highlight_query(self, event: Input.Changed) -> None:
        self.query_one("#detail-log", LogView).set_query(event.value)
        self._say_search("")

    @on(Input.Submitted, "#detail-search-input")
    def _find_query(self, event: Input.Submitted) -> None:
        self._find(forward=True, from_view=True)
        self.query_one("#detail-log", LogView).focus()

    def action_search_next(self) -> None:
        self._find(forward=True)

    def action_search_previous(self) -> None:
        self._find(forward=False)

    def _find(self, forward: bool, from_view: bool = False) -> None:
        log = self.query_one("#detail-log", LogView)
        if not log.search_text:
            self.action_search()
            return
        index = log.find(forward=forward, from_view=from_view)
        self._update_log_subtitle()
        if index is None:
            self._say_search(f"no match for {log.search_text!r}", problem=True)
            return
        found = log.matches()
        self._say_search(
            f"match {found.index(index) + 1} of {len(found)} · line {log.dropped_lines + index + 1:,}"
        )

    def _say_search(self, message: str, problem: bool = False) -> None:
        """The search result beside the search field, or as a toast when the bar is closed."""
        status = self.query_one("#detail-search-status", Static)
        status.update(message)
        status.set_class(problem, "-problem")
        if message and not self.query_one("#detail-search").has_class("-visible"):
            self.notify(message, severity="warning" if problem else "information", timeout=3)
