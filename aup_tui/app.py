"""The aup-tui App: which screen to show, app-wide keys, the command palette and themes.

`run_app(auppath)` shows the latest experiment of a `.aup` folder (a picker when there are
several, a friendly empty state when there is none); `run_app(auppath, connector=…,
experiment=config)` runs an experiment in this process and shows it live; `run_app(auppath,
connector=…, watch=eid)` follows an experiment another process runs, through the store.
It returns the exit code: 0 finished, 130 stopped, 1 failed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, TextIO

from aup_tui_backends.status import ExperimentStatus
from aup_tui_themes import DEFAULT_THEME, THEMES
from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from .exit_codes import EXIT_ERROR, EXIT_OK, EXIT_STOPPED, for_status
from .signals import STOP_WAIT, quiet_on_hangup, signal_name, stop_signals
from .sources import EngineBridge, LiveSource, StoreSource
from .state import ExperimentState

if TYPE_CHECKING:  # the engine's heavy modules load once an experiment is opened
    from aup_tui_backends.config import ExperimentConfig
    from aup_tui_backends.experiment import Experiment
    from aup_tui_backends.resume import ResumePlan
    from aup_tui_backends.store import TinyDBConnector

    from .monitoring import Monitoring
    from .screens.picker import PickerScreen

PREFS_FILE = "tui.json"
THEME_NAMES = tuple(t.name for t in THEMES)


# -- preferences in .aup/tui.json ---------------------------------------------------------


def load_prefs(auppath: str | None) -> dict[str, Any]:
    if not auppath:
        return {}
    try:
        with open(os.path.join(auppath, PREFS_FILE), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_prefs(auppath: str | None, prefs: dict[str, Any]) -> None:
    if not auppath or not os.path.isdir(auppath):
        return
    path = os.path.join(auppath, PREFS_FILE)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(prefs, f)
    os.replace(tmp, path)


# -- the app -------------------------------------------------------------------------------


class AupApp(App[int]):
    """aup-tui. Give it a `state` (tests, screenshots) or a store and what to show."""

    CSS_PATH = "app.tcss"
    TITLE = "aup-tui"
    BINDINGS = [
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("question_mark,f1", "help", "Help", id="app.help"),
        Binding("t", "next_theme", "Theme", id="app.theme"),
    ]

    def __init__(
        self,
        auppath: str | None = None,
        *,
        connector: TinyDBConnector | None = None,
        experiment: ExperimentConfig | None = None,
        watch: int | None = None,
        state: ExperimentState | None = None,
        picker_rows: list[dict[str, Any]] | None = None,
        clock: Callable[[], float] | None = None,
        theme: str | None = None,
        find: bool = True,
        demo_source: Any = None,
        readonly: bool = False,
        plan: ResumePlan | None = None,
    ) -> None:
        super().__init__()
        #: `aup-tui resume`/`rerun`: the ended experiment to continue here (see `continue_experiment`)
        self.resume_plan = plan
        self._resume_snapshot: tuple[dict[str, Any] | None, list[dict[str, Any]]] = (None, [])
        #: `watch --readonly`: every key that stops or answers a job is hidden and disabled
        self.readonly = readonly
        self.auppath = auppath
        self.connector = connector
        self.experiment_config = experiment
        self.watch_eid = watch
        self.demo_state = state
        self.demo_source = demo_source  # tests and screenshots: where the demo's requests go
        self.picker_rows = picker_rows
        self.clock = clock or time.time
        self.find = find
        self.experiment: Experiment | None = None  # the one this process runs
        self.bridge: EngineBridge | None = None
        self.exp_thread: threading.Thread | None = None
        self.exp_outcome: dict[str, Any] = {}
        self.quit_choice: str | None = None
        self.signalled: int | None = None  # SIGTERM/SIGHUP that closed the app
        self.empty_reason: tuple[bool, str, str] | None = None
        self.initial_experiments: list[dict[str, Any]] = []
        #: the GPU and node monitors: started by the first dashboard; tests inject one
        self.monitoring: Monitoring | None = None
        for t in THEMES:
            self.register_theme(t)
        self._resolve()
        self.prefs = load_prefs(self.auppath)  # once the .aup folder is known
        wanted = theme or self.prefs.get("theme")
        self.theme = wanted if wanted in self.available_themes else DEFAULT_THEME

    # -- what to show ---------------------------------------------------------------------

    def _resolve(self) -> None:
        """Find the .aup folder and the store (before the event loop runs: no I/O on it later)."""
        if self.demo_state is not None or self.picker_rows is not None:
            return
        if self.connector is None and self.find:
            from aup_tui_backends.config import find_env
            from aup_tui_backends.errors import ConfigError

            try:
                self.auppath = find_env(self.auppath)
            except ConfigError:
                where = os.path.abspath(os.path.expanduser(self.auppath)) if self.auppath else os.getcwd()
                self.empty_reason = (True, where, "")
                return
            from aup_tui_backends.store import TinyDBConnector

            self.connector = TinyDBConnector(self.auppath)
        if self.connector is not None and self.resume_plan is not None:
            self._resume_snapshot = _snapshot(self.connector, self.resume_plan.eid)
        elif self.connector is not None and self.experiment_config is None and self.watch_eid is None:
            self.initial_experiments = self.connector.experiments()  # before the event loop runs

    def on_mount(self) -> None:
        from .screens.dashboard import DashboardScreen
        from .screens.empty import EmptyScreen
        from .screens.picker import PickerScreen

        if self.demo_state is not None:
            self.push_screen(DashboardScreen(self.demo_state, self.clock, source=self.demo_source))
        elif self.picker_rows is not None:
            self.push_screen(PickerScreen(rows=self.picker_rows, clock=self.clock))
        elif self.empty_reason is not None:
            self.push_screen(EmptyScreen(*self.empty_reason))
        elif self.experiment_config is not None:
            self._start_experiment()
        elif self.resume_plan is not None:
            self._start_experiment(self.resume_plan, self._resume_snapshot)
        elif self.watch_eid is not None:
            self.open_experiment(self.watch_eid, base=True)
        else:
            exps = self.initial_experiments
            if not exps:
                self.push_screen(EmptyScreen(False, self.auppath or ""))
            elif len(exps) == 1 or exps[-1]["status"] == ExperimentStatus.RUNNING:
                self.open_experiment(exps[-1]["eid"], base=True)
            else:
                self.push_screen(PickerScreen(self.connector, clock=self.clock))
        if stop_signals.installed:  # the CLI's processes (not tests or screenshots)
            stop_signals.route(self._signal_arrived)

    def _signal_arrived(self, signum: int) -> None:
        """From the signal handler (main thread, any moment): only hand it to the event loop."""
        self.call_later_threadsafe(self._signalled, signum)

    def _signalled(self, signum: int) -> None:
        """SIGTERM/SIGHUP: stop our experiment as `S` does (jobs killed, recorded STOPPED, resources
        freed; `_finish_experiment` waits for it) and close, exit 130. A watched experiment runs on."""
        if self.signalled is not None:
            return
        self.signalled = signum
        if self.running_experiment and self.experiment is not None:
            self.quit_choice = "stop"
            self.experiment.stop()
        self.exit(EXIT_STOPPED)

    def open_experiment(self, eid: int, base: bool = False) -> None:
        """The dashboard of experiment `eid` from the store (followed while it runs)."""
        from .screens.dashboard import DashboardScreen

        state = ExperimentState(eid=eid)
        screen = DashboardScreen(
            state, self.clock, source=StoreSource(self.connector, eid), connector=self.connector, poll=True
        )
        self.push_screen(screen)

    def on_picker_screen_chosen(self, message: PickerScreen.Chosen) -> None:
        self.open_experiment(message.eid)

    def continue_experiment(self, eid: int, kind: str, jids: list[int] | None = None) -> None:
        """Resume experiment `eid` (`kind` "resume"), or run its failed jobs (or the jobs `jids`)
        again ("rerun"), here: planned in a worker (the store is read, the proposer rebuilt),
        then shown live as `aup-tui run` shows one. One experiment runs in an app at a time."""
        if self.exp_thread is not None and self.exp_thread.is_alive():
            self.notify(
                f"experiment {self.experiment.eid if self.experiment else ''} runs here already: "
                "one at a time in this window",
                severity="warning",
            )
            return
        if self.connector is None:
            self.notify("no store to continue an experiment from", severity="warning")
            return
        from .screens.confirm import ConfirmScreen

        if kind == "resume":
            question = (
                f"Resume experiment {eid}? Its failed and interrupted jobs (and those stopped with "
                "it) run again, then the rest of its budget, here."
            )
        elif jids:
            question = (
                f"Run job(s) {', '.join(map(str, jids))} of experiment {eid} again (a new attempt), here?"
            )
        else:
            question = f"Run the failed jobs of experiment {eid} again (each a new attempt), here?"

        def answered(yes: bool | None) -> None:
            if yes:
                self.notify(f"starting experiment {eid} again…", timeout=3)
                self._plan_continuation(eid, kind, jids)

        label = "Resume" if kind == "resume" else "Run again"
        self.push_screen(ConfirmScreen(question, yes_label=label, no_label="Cancel"), answered)

    @work(thread=True, exclusive=True, group="continue")
    def _plan_continuation(self, eid: int, kind: str, jids: list[int] | None) -> None:
        from aup_tui_backends.errors import AupError
        from aup_tui_backends.resume import plan_rerun, plan_resume
        from aup_tui_backends.setup import require_resources

        connector = self.connector
        assert connector is not None  # continue_experiment checked
        try:
            plan = plan_resume(connector, eid) if kind == "resume" else plan_rerun(connector, eid, jids)
            require_resources(plan.config.resource, self.auppath or ".aup", connector)
            snapshot = _snapshot(connector, eid)
        except Exception as exc:  # noqa: BLE001 — said in the app, which goes on
            why = str(exc) if isinstance(exc, AupError) else f"{type(exc).__name__}: {exc}"
            self.call_from_thread(self.notify, why, severity="error", timeout=10)
            return
        self.call_from_thread(self._start_experiment, plan, snapshot)

    def _start_experiment(
        self,
        plan: ResumePlan | None = None,
        snapshot: tuple[dict[str, Any] | None, list[dict[str, Any]]] = (None, []),
    ) -> None:
        """Run the app's experiment (or continue `plan`'s, its store records `snapshot` shown
        first) in a thread, and show it live."""
        from aup_tui_backends.events import EventBus
        from aup_tui_backends.experiment import Experiment

        from .screens.dashboard import DashboardScreen

        config = self.experiment_config if plan is None else plan.config
        assert config is not None  # on_mount starts one only when given its config or a plan
        bus = EventBus()
        if self.bridge is not None:  # an earlier experiment's, over
            self.bridge.close()
        self.bridge = EngineBridge(bus)
        self.experiment = exp = Experiment(
            config, auppath=self.auppath or ".aup", connector=self.connector, bus=bus
        )
        self.exp_outcome = {}
        state = ExperimentState(name=config.name, target=config.target)
        state.start = self.clock()
        if plan is not None:
            state.merge_store(*snapshot)
        screen = DashboardScreen(
            state,
            self.clock,
            source=LiveSource(exp, self.bridge),
            bridge=self.bridge,
            connector=self.connector,
        )
        same = [
            s
            for s in self.screen_stack
            if plan is not None and isinstance(s, DashboardScreen) and s.state.eid == plan.eid
        ]
        if same:  # its dashboard (under a job's detail, say) becomes the live one
            while self.screen is not same[-1]:
                self.pop_screen()
            self.switch_screen(screen)
        else:
            self.push_screen(screen)

        def work() -> None:
            try:
                self.exp_outcome["result"] = exp.run() if plan is None else exp.resume(plan)
            except BaseException as exc:  # shown in the app; re-raised by run_app
                self.exp_outcome["error"] = exc
                self.call_later_threadsafe(self._experiment_crashed, exc)

        self.exp_thread = threading.Thread(target=work, name="aup-experiment", daemon=True)
        self.exp_thread.start()

    def call_later_threadsafe(self, callback: Callable, *args: Any) -> None:
        loop = self._loop
        if loop is not None and self.is_running:
            loop.call_soon_threadsafe(callback, *args)

    def _experiment_crashed(self, exc: BaseException) -> None:
        from .screens.dashboard import DashboardScreen

        self.notify(f"the experiment stopped with an error: {exc}", severity="error", timeout=30)
        for screen in self.screen_stack:
            if isinstance(screen, DashboardScreen) and isinstance(screen.source, LiveSource):
                screen.experiment_failed(str(exc))

    @property
    def running_experiment(self) -> bool:
        return (
            self.exp_thread is not None
            and self.exp_thread.is_alive()
            and self.experiment is not None
            and not self.experiment.stopping
        )

    def on_unmount(self) -> None:
        stop_signals.route(None)  # the loop is closing: a later signal is kept for what follows
        if self.monitoring is not None:
            self.monitoring.stop()  # the GPU and node monitors' threads, NVML, SSH connections

    # -- app-wide actions -----------------------------------------------------------------

    async def action_quit(self) -> None:
        exp = self.experiment
        if exp is None or not self.running_experiment or self.readonly:
            self.exit(self._exit_code())
            return
        from .screens.dashboard import DashboardScreen

        running = 0
        for screen in self.screen_stack:
            if isinstance(screen, DashboardScreen):
                running = screen.state.running

        def answered(choice: str | None) -> None:
            if choice is None:
                return
            self.quit_choice = choice
            if choice == "stop":
                exp.stop()
            self.exit(EXIT_STOPPED if choice == "stop" else EXIT_OK)

        from .screens.confirm import ConfirmScreen

        question = (
            f"Experiment '{(self.experiment_config or exp.config).name}' is still running ({running} job(s) now).\n\n"
            "y  stop it (running jobs are killed, it ends STOPPED) and quit\n"
            "n  quit the dashboard, keep it running in this terminal with a progress line\n"
            "escape  stay here"
        )
        quit_question = ConfirmScreen(
            question, "Stop & quit", "Keep running", yes="stop", no="keep", cancel=None, cancel_label="Cancel"
        )
        self.push_screen(quit_question, answered)

    def _exit_code(self) -> int:
        if self.experiment is not None:
            if "error" in self.exp_outcome:
                return EXIT_ERROR
            status = self.experiment.status  # set before ExperimentFinished is published
            return EXIT_OK if ExperimentStatus(status).is_live else for_status(status)
        if self.watch_eid is not None:
            from .screens.dashboard import DashboardScreen

            for screen in self.screen_stack:
                if isinstance(screen, DashboardScreen) and screen.state.eid == self.watch_eid:
                    if not screen.state.is_live:
                        return for_status(screen.state.status)
        return EXIT_OK

    def get_system_commands(self, screen: Screen) -> Iterator[SystemCommand]:
        """The palette's app-wide commands; each screen adds its own through its `COMMANDS`.

        Textual's, with our help (`?`) for its key panel, and the themes by name."""
        for command in super().get_system_commands(screen):
            if command.title == "Keys":
                continue
            if command.title == "Quit":  # our action_quit: it asks while an experiment runs here
                command = command._replace(help="leave aup-tui; asks first while an experiment runs here (q)")
            yield command
        yield SystemCommand("Help: keys", "show or hide the keys of this screen (? or f1)", self.action_help)
        yield SystemCommand("Next theme", "switch to the next theme (t)", self.action_next_theme)
        for name in THEME_NAMES:
            yield SystemCommand(
                f"Theme: {name.removeprefix('aup-')}",
                f"use the {name} theme",
                partial(setattr, self, "theme", name),
            )

    def action_help(self) -> None:
        from .screens.help import HelpScreen, help_rows

        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)
            return
        self.push_screen(HelpScreen(help_rows(self, self.screen)))

    def action_next_theme(self) -> None:
        names = THEME_NAMES
        i = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(i + 1) % len(names)]

    @work(thread=True, group="prefs")
    def _save_prefs(self, prefs: dict) -> None:
        try:
            save_prefs(self.auppath, prefs)
        except OSError:
            pass

    def remember(self, key: str, value: Any) -> None:
        """Keep a display choice in .aup/tui.json for the next start (written by a worker)."""
        if self.prefs.get(key) != value:
            self.prefs[key] = value
            self._save_prefs(dict(self.prefs))

    def watch_theme(self, theme: str) -> None:
        """Where every theme change lands, however it was made (t, the palette, Textual's theme
        picker): remembered in .aup/tui.json and announced. The views that paint with theme
        colours repaint themselves (`widgets.colors.on_theme_change`)."""
        if self.is_running:
            self.remember("theme", theme)
            self.notify(f"theme: {theme}", timeout=2)


# -- entry point ---------------------------------------------------------------------------


def run_app(
    auppath: str | None = None,
    *,
    connector: TinyDBConnector | None = None,
    experiment: ExperimentConfig | None = None,
    watch: int | None = None,
    readonly: bool = False,
    plan: ResumePlan | None = None,
) -> int:
    """Run the TUI; returns the exit code (0 finished, 130 stopped, 1 failed). `plan`: an ended
    experiment to continue (`aup-tui resume`/`rerun`)."""
    app = AupApp(
        auppath, connector=connector, experiment=experiment, watch=watch, readonly=readonly, plan=plan
    )
    try:
        code = app.run()
    except BaseException as exc:
        # Textual's last writes (its final frame, an error report) fail with EIO once the
        # terminal hung up: that is the end we were asked for, not an error of ours
        hung_up = isinstance(exc, OSError) and (app.signalled or stop_signals.received) is not None
        if app.experiment is not None:  # never leave our jobs running, unrecorded, behind us
            app.quit_choice = "stop"
            stopped = _finish_experiment(app)
            if hung_up:
                return stopped
        if hung_up:
            return EXIT_STOPPED
        raise
    return exit_code_after(app, code)


def exit_code_after(app: AupApp, code: int | None) -> int:
    """The exit status once the app closed (`code`: what it exited with), after letting its
    experiment end. An exception that ended the app (Textual printed it; `return_code` 1) is a
    failure, exit 1, never 0: the experiment's jobs are stopped, not left running unrecorded."""
    crashed = bool(app.return_code)
    if app.experiment is None:
        if crashed:
            return EXIT_ERROR
        if app.signalled is not None or stop_signals.received is not None:
            return EXIT_STOPPED
        return EXIT_OK if code is None else int(code)
    if crashed:
        app.quit_choice = "stop"
        _finish_experiment(app)
        return EXIT_ERROR
    return _finish_experiment(app)


def _snapshot(connector: TinyDBConnector, eid: int) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Experiment `eid`'s record and jobs: what a continued experiment's dashboard shows first."""
    return connector.get_experiment(eid), connector.jobs(eid)


def _finish_experiment(app: AupApp) -> int:
    """After the TUI closed: let the experiment end (stopped, or kept running headless) and report."""
    from aup_tui_backends.experiment import summarize

    from .headless import print_summary

    exp, thread, out = app.experiment, app.exp_thread, quiet_on_hangup(sys.stderr)
    assert exp is not None, "only for an app that ran an experiment"
    signalled = app.signalled or stop_signals.received
    if thread is not None and thread.is_alive():
        if app.quit_choice == "keep" and signalled is None:
            out = _continue_headless(app, exp, thread)
        else:
            if not exp.stopping:
                exp.stop()
            why = f"{signal_name(signalled)}: " if signalled else ""
            out.write(f"{why}stopping the experiment: killing running jobs…\n")
            thread.join(STOP_WAIT if signalled else None)
            if thread.is_alive():
                out.write(
                    f"jobs not stopped after {STOP_WAIT:g} s: leaving them; "
                    "the next start records them INTERRUPTED\n"
                )
                return EXIT_STOPPED
    if app.bridge is not None:
        app.bridge.close()
    if "error" in app.exp_outcome:
        raise app.exp_outcome["error"]
    if exp.eid is None:
        return EXIT_ERROR
    result = app.exp_outcome.get("result") or summarize(exp.connector, exp.eid)
    print_summary(result, exp.config, out)
    exp.connector.close()
    if (
        result.status == ExperimentStatus.STOPPED
        or app.quit_choice == "stop"
        or signalled
        or stop_signals.received
    ):
        return EXIT_STOPPED
    return for_status(result.status)


def _continue_headless(app: AupApp, exp: Experiment, thread: threading.Thread) -> TextIO:
    """The person quit the dashboard but kept the experiment (run by `thread`): a progress line
    until it ends. Returns where the summary goes (the terminal, quiet once it hung up)."""
    from .headless import HeadlessFollower

    follower = HeadlessFollower(exp, sys.stderr)
    follower.catch_up()
    follower.progress.message(
        f"experiment {exp.eid} '{exp.config.name}' keeps running here — Ctrl-C stops it"
    )
    follower.follow(thread)
    if follower.interrupted:
        app.quit_choice = "stop"
    return follower.out
