"""`aup-tui run --headless`: the experiment with a progress line, terminal prompts for passive
jobs, Ctrl-C to stop, and a summary at the end.

The experiment runs in a worker thread; this (main) thread owns the terminal: it draws progress
from engine events and asks for passive results, so Ctrl-C always lands here.
"""

from __future__ import annotations

import os
import queue
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO, cast

from aup_tui_backends.errors import JobError
from aup_tui_backends.events import (
    Event,
    ExperimentStarted,
    JobFailed,
    JobIntermediate,
    JobStopped,
    Notice,
    PassiveResultAccepted,
    PassiveResultWanted,
)
from aup_tui_backends.experiment import Experiment, ExperimentResult, summarize
from aup_tui_backends.jobs import ResultParseError, log_relpath

from .exit_codes import for_status
from .signals import STOP_WAIT, quiet_on_hangup, signal_name, stop_signals
from .state import FOLDED_EVENTS, ExperimentState

if TYPE_CHECKING:
    from aup_tui_backends.config import ExperimentConfig
    from aup_tui_backends.resources import PassiveResourceManager
    from aup_tui_backends.resume import ResumePlan
    from aup_tui_backends.store import TinyDBConnector


BAR_WIDTH = 24
MIN_BAR_WIDTH = 8  # a shorter bar says too little to be worth its room
PLAIN_EVERY = 5.0  # seconds between plain lines (no terminal) while jobs end
PLAIN_IDLE = 60.0  # seconds between plain lines when nothing changed
#: what the terminal line gives up first when it does not fit (the bar goes before all)
_DROP_ORDER = ("stopped", "elapsed", "running", "failed", "best_jid", "best")


def terminal_columns() -> int:
    """The terminal's width now: $COLUMNS, else stdout's terminal, else stderr's (where the
    progress goes), else 80."""
    columns = shutil.get_terminal_size((0, 0)).columns
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stderr__.fileno()).columns if sys.__stderr__ else 0
        except (OSError, ValueError):
            columns = 0
    return columns if columns > 0 else 80


_COUNTS = ("running", "failed", "stopped")


def _joined(parts: list[tuple[str, str]]) -> str:
    """The parts' texts, two spaces apart; the job counts (running, failed, stopped) one."""
    out = ""
    for i, (kind, text) in enumerate(parts):
        if i:
            out += " " if kind in _COUNTS and parts[i - 1][0] in _COUNTS else "  "
        out += text
    return out


def _bar(ended: int, total: int, width: int) -> str:
    filled = int(width * ended / total) if total else width
    return "█" * filled + "░" * (width - filled)


class Progress:
    """Jobs done / total, best score so far and elapsed time, as one redrawn line.

    The counts and the best job are those of an `ExperimentState`, the model the dashboard folds
    the same events into: the terminal and the TUI never disagree about a run."""

    def __init__(self, total: int, maximize: bool, out: TextIO) -> None:
        self.state = ExperimentState(n_samples=total, target="max" if maximize else "min")
        self.out = out
        self.start = time.monotonic()
        self.tty = out.isatty()
        self._last_line = -PLAIN_IDLE  # the first draw prints
        self._last_seen: tuple[int | None, ...] = ()
        self._lock = threading.RLock()

    @property
    def total(self) -> int:
        return self.state.total

    @total.setter
    def total(self, n_samples: int) -> None:
        self.state.n_samples = n_samples

    @property
    def best(self) -> tuple[float, int] | None:
        """(score, jid) of the best job so far."""
        st = self.state
        return None if st.best_jid is None or st.best_score is None else (st.best_score, st.best_jid)

    def apply(self, event: Event) -> None:
        """Fold one engine event (called from engine threads); say when a job failed."""
        with self._lock:
            self.state.apply([event])
        if isinstance(event, JobFailed):
            retrying = ", retrying" if event.will_retry else ""
            self.message(f"job {event.jid} failed{retrying}: {event.error}")

    def catch_up(self, exp: dict[str, Any] | None, jobs: list[dict[str, Any]]) -> None:
        """Fold what the store says (an experiment that ran a while before we followed it)."""
        with self._lock:
            self.state.merge_store(exp, jobs)

    def _parts(self) -> list[tuple[str, str]]:
        """(kind, text) of what the line shows, in display order (the bar is added when drawn)."""
        with self._lock:
            st = self.state
            ended, total, running, failed, stopped = st.ended, st.total, st.running, st.failed, st.stopped
            best = self.best
        elapsed = int(time.monotonic() - self.start)
        parts = [("count", f"{ended}/{total}"), ("running", f"running {running}")]
        if failed:
            parts.append(("failed", f"failed {failed}"))
        if stopped:
            parts.append(("stopped", f"stopped {stopped}"))
        parts.append(("best", f"best {best[0]:.6g} (job {best[1]})" if best else "best —"))
        parts.append(("elapsed", f"{elapsed // 60:02d}:{elapsed % 60:02d}"))
        return parts

    def line(self, width: int | None = None) -> str:
        """The progress line, cut to `width` cells (None: as long as it is). What goes first when
        space is short: the bar shrinks, then goes, then stopped, elapsed, running, failed, the best job's id,
        the best score; the count of ended jobs stays (cut, with an ellipsis, only below its length)."""
        shown = self._parts()
        if width is None:
            return _bar(self.state.ended, self.total, BAR_WIDTH) + " " + _joined(shown)
        for drop in (None, *_DROP_ORDER):
            if drop == "best_jid":
                shown = [(k, t.split(" (job ")[0] if k == "best" else t) for k, t in shown]
            elif drop is not None:
                shown = [(k, t) for k, t in shown if k != drop]
            text = _joined(shown)
            if len(text) <= width:
                break
        room = min(BAR_WIDTH, width - len(text) - 1)
        if drop is None and room >= MIN_BAR_WIDTH:  # the bar only when all the rest fits
            text = _bar(self.state.ended, self.total, room) + " " + text
        return text if len(text) <= width else text[: width - 1] + "…" if width > 0 else ""

    def plain_line(self) -> str:
        """The progress as a log line: no bar, no escapes (stdout is a file or a CI log)."""
        parts = dict(self._parts())
        return f"[{parts.pop('elapsed')}] " + _joined(list(parts.items()))

    def draw(self, force: bool = False) -> None:
        """Redraw the line in place on a terminal (fit to its width, asked each time: a resize is
        followed, the line never wraps); elsewhere print a plain line when something changed,
        at most every PLAIN_EVERY seconds, and every PLAIN_IDLE seconds to show it still runs."""
        if not self.total:
            return
        now = time.monotonic()
        if self.tty:
            if force or now - self._last_line > 0.1:
                # one cell spare: a line that fills the last column leaves some terminals wrapping
                self.out.write("\r\x1b[2K" + self.line(terminal_columns() - 1))
                self.out.flush()
                self._last_line = now
            return
        with self._lock:
            st = self.state
            seen = (st.ended, st.running, st.failed, st.stopped, st.best_jid, st.total)
        changed = seen != self._last_seen
        if force or (changed and now - self._last_line >= PLAIN_EVERY) or now - self._last_line >= PLAIN_IDLE:
            self.out.write(self.plain_line() + "\n")
            self.out.flush()
            self._last_line, self._last_seen = now, seen

    def message(self, text: str) -> None:
        with self._lock:
            if self.tty:
                self.out.write("\r\x1b[2K")
            self.out.write(text + "\n")
            self.out.flush()


@dataclass(frozen=True)
class _Line:
    """A line typed on stdin (None at end of input), read by a helper thread."""

    text: str | None


@dataclass(frozen=True)
class _Signalled:
    """SIGTERM or SIGHUP arrived (queued by the signal handler: it does nothing else)."""

    signum: int


@dataclass(frozen=True)
class _Wake:
    """A no-op that wakes the follower's queue: the experiment's thread is ending."""


#: what the follower's main thread acts on, from the engine, stdin, signals and the run's thread
_Item = Event | _Line | _Signalled | _Wake


def _read_stdin(events: queue.SimpleQueue[_Item], stream: TextIO) -> None:
    try:
        for line in stream:
            events.put(_Line(line.rstrip("\n")))
    except (OSError, ValueError):  # the terminal hung up (EIO) or stdin was closed
        pass
    events.put(_Line(None))


class PassivePrompt:
    """Asks at the terminal for a waiting passive job's output; re-asks on invalid input.

    Lines arrive one at a time, so an answer given elsewhere (the TUI, `submit_passive`) simply
    cancels the prompt instead of leaving it blocked in `input()`.
    """

    def __init__(self, exp: Experiment, progress: Progress) -> None:
        self.exp, self.progress = exp, progress
        self.jid: int | None = None
        self.lines: list[str] = []
        self.typed_ahead: list[str | None] = []  # lines (None: end of input) before a job waited

    def start(self, event: PassiveResultWanted) -> None:
        self.jid, self.lines = event.jid, []
        self.progress.message(
            f"\nJob {event.jid} waits for you. In another terminal run:\n    {event.command}\n"
            "Paste its output and end with an empty line, or type the score (or 'fail: <reason>'):"
        )
        ahead, self.typed_ahead = self.typed_ahead, []
        for line in ahead:
            self.feed(line)

    @property
    def at_end_of_input(self) -> bool:
        """Input ended while a job waits: nobody can answer it here any more."""
        return self.jid is not None and None in self.typed_ahead

    def cancel(self, jid: int, why: str) -> None:
        if self.jid == jid:
            self.progress.message(f"job {jid} {why}")
            self.jid = None

    def feed(self, line: str | None) -> None:
        """One line of input (None: end of input). A pasted answer is complete at an empty line
        or at the end of input; a bare number (or `fail: <reason>`) as its first line at once."""
        if line is None and self.jid is not None and self.lines:
            self._answer("\n".join(self.lines))  # end of input submits what arrived before it
        if self.jid is None or line is None:
            self.typed_ahead.append(line)
            return
        if not line.strip():
            if self.lines:
                self._answer("\n".join(self.lines))
            return
        self.lines.append(line)
        if len(self.lines) == 1 and _is_number_or_fail(line):
            self._answer(line)

    def _answer(self, text: str) -> None:
        jid = self.jid
        if jid is None:  # no job waits here any more
            return
        rm = cast("PassiveResourceManager", self.exp.resource_manager)  # the one that makes jobs wait
        self.lines = []
        try:
            if _is_fail(text):
                rm.mark_failed(jid, text.split(":", 1)[1].strip() if ":" in text else "")
                self.progress.message(f"job {jid} marked failed")
            else:
                score = rm.submit_result(jid, text)
                self.progress.message(f"job {jid}: score {score:g}")
        except ResultParseError as exc:
            self.progress.message(f"{exc} — try again:")
            return
        except JobError as exc:  # answered elsewhere meanwhile
            self.progress.message(str(exc))
        self.jid = None


def _is_fail(text: str) -> bool:
    """`fail` or `fail: <reason>` — not any line that starts with "fail" ("Failed to load cache…"
    at the top of a pasted log is output, not a verdict)."""
    text = text.strip().lower()
    return text == "fail" or text.startswith("fail:")


def _is_number_or_fail(line: str) -> bool:
    text = line.strip()
    if _is_fail(text):
        return True
    try:
        [float(v) for v in text.split(",")]
        return True
    except ValueError:
        return False


class HeadlessFollower:
    """The terminal side of a running experiment: progress line, passive prompts, Ctrl-C.

    Used by `aup-tui run --headless` from the start, and by the TUI when the person quits the
    dashboard but keeps the experiment running (`catch_up` first counts what already happened).
    """

    def __init__(self, exp: Experiment, out: TextIO | None = None, stdin: TextIO | None = None) -> None:
        self.exp = exp
        self.out = quiet_on_hangup(out or sys.stderr)  # a closed terminal must not end the run half-way
        self.stdin = stdin
        self.progress = Progress(0, exp.config.maximize, self.out)
        self.prompt = PassivePrompt(exp, self.progress)
        self.events: queue.SimpleQueue[_Item] = queue.SimpleQueue()  # what the main thread must act on
        self.interrupted = False
        self.signalled: int | None = None  # SIGTERM/SIGHUP that stopped the experiment
        self._deadline: float | None = None  # after a signal: stop waiting for the jobs then
        self._stdin_reader: threading.Thread | None = None
        self._unsubscribe = [
            exp.bus.subscribe(self.progress.apply, kinds=_FOLDED),  # in engine threads: cheap
            exp.bus.subscribe(
                self.events.put,
                kinds=(
                    Notice,
                    PassiveResultWanted,
                    PassiveResultAccepted,
                    JobFailed,
                    JobStopped,
                    ExperimentStarted,
                ),
            ),
        ]

    def catch_up(self) -> None:
        """Count the jobs that ended before we subscribed, and re-ask for waiting passive jobs."""
        exp, progress = self.exp, self.progress
        eid = exp.recorded_eid
        doc = exp.connector.get_experiment(eid) or {}
        if doc.get("start"):
            progress.start = time.monotonic() - max(0.0, time.time() - doc["start"])
        progress.catch_up(doc or None, exp.connector.jobs(eid))
        waiting = getattr(exp.resource_manager, "waiting", None)  # the passive manager's
        for job in waiting() if waiting is not None else []:
            self.events.put(
                PassiveResultWanted(
                    eid=eid,
                    jid=job.jid,
                    command=job.shell_command,
                    workingdir=job.path,
                    config_path=job.config_path,
                )
            )

    def follow(self, thread: threading.Thread) -> None:
        """Show progress and answer prompts until `thread` (running the experiment) ends.

        SIGTERM/SIGHUP stop the experiment like Ctrl-C; after one, the wait for the jobs to be
        killed and recorded is bounded (STOP_WAIT), so a scheduler's kill grace is respected."""
        stop_signals.route(lambda signum: self.events.put(_Signalled(signum)))  # signal-safe put
        try:
            while thread.is_alive() or not self.events.empty():
                if self._deadline is not None and time.monotonic() > self._deadline:
                    self.progress.message(
                        f"jobs not stopped after {STOP_WAIT:g} s: leaving them; "
                        "the next start records them INTERRUPTED"
                    )
                    break
                try:
                    event = self.events.get(timeout=0.1)
                except queue.Empty:
                    self.progress.draw()
                    continue
                except KeyboardInterrupt:
                    self.stop()
                    continue
                if isinstance(event, _Wake):
                    thread.join()
                    continue
                if isinstance(event, _Signalled):
                    self._signalled(event.signum)
                    continue
                self._handle(event)
                self.progress.draw()
            thread.join(None if self._deadline is None else max(0.0, self._deadline - time.monotonic()))
        except KeyboardInterrupt:
            self.stop()
            thread.join()
        finally:
            stop_signals.route(None)  # a later signal is kept, not acted on half-way through the exit
            for unsubscribe in self._unsubscribe:
                unsubscribe()
        self.progress.draw(force=True)
        if self.progress.tty:  # end the redrawn line (a plain one already ended)
            self.out.write("\n")

    def wake(self) -> None:
        """Make `follow` notice at once that the experiment's thread is ending (call from it)."""
        self.events.put(_Wake())

    def stop(self, why: str = "stopping: killing running jobs…") -> None:
        self.interrupted = True
        self.progress.message(why)
        self.exp.stop()

    def _signalled(self, signum: int) -> None:
        if self.signalled is not None:
            return
        self.signalled = signum
        self._deadline = time.monotonic() + STOP_WAIT
        self.stop(f"{signal_name(signum)}: stopping the experiment, killing running jobs…")

    def _handle(self, event: Event | _Line) -> None:
        prompt, progress, config = self.prompt, self.progress, self.exp.config
        if isinstance(event, ExperimentStarted):
            progress.total = event.n_samples
            progress.message(
                f"experiment {event.eid} '{config.name}' on {config.resource} "
                f"({config.n_parallel} at a time) — Ctrl-C stops it"
            )
        elif isinstance(event, Notice):
            progress.message(f"{event.level}: {event.message}")
        elif isinstance(event, PassiveResultWanted):
            prompt.start(event)
            if self._stdin_reader is None:
                self._stdin_reader = threading.Thread(
                    target=_read_stdin, args=(self.events, self.stdin or sys.stdin), daemon=True
                )
                self._stdin_reader.start()
        elif isinstance(event, PassiveResultAccepted):
            prompt.cancel(event.jid, "was answered elsewhere")
        elif isinstance(event, (JobFailed, JobStopped)):
            prompt.cancel(event.jid, "ended")
        elif isinstance(event, _Line):
            prompt.feed(event.text)
        if prompt.at_end_of_input and not self.exp.stopping:
            progress.message("no more input on stdin: stopping the experiment (the job stays unanswered)")
            self.exp.stop()


def run_headless(
    config: ExperimentConfig,
    auppath: str,
    connector: TinyDBConnector,
    out: TextIO | None = None,
    stdin: TextIO | None = None,
    plan: ResumePlan | None = None,
) -> int:
    """Run `config` to the end on the terminal (or continue an ended experiment: `plan`, from
    `aup-tui resume`/`rerun`, its earlier jobs counted in the progress); returns the exit status."""
    out = out or sys.stderr
    exp = Experiment(config, auppath=auppath, connector=connector)
    follower = HeadlessFollower(exp, out, stdin)
    if plan is not None:
        follower.progress.catch_up(connector.get_experiment(plan.eid), connector.jobs(plan.eid))
    ran: list[ExperimentResult] = []
    raised: list[BaseException] = []  # re-raised in the main thread

    def work() -> None:
        try:
            ran.append(exp.run() if plan is None else exp.resume(plan))
        except BaseException as exc:
            raised.append(exc)
        finally:
            follower.wake()

    thread = threading.Thread(target=work, name="aup-experiment", daemon=True)
    thread.start()
    follower.follow(thread)
    if raised:
        raise raised[0]
    # no result: it gave up waiting after a signal; the store has what the run recorded
    result = ran[0] if ran else summarize(connector, exp.recorded_eid)
    print_summary(result, config, follower.out)  # dropped if the terminal hung up
    if not thread.is_alive():  # else it gave up waiting after a signal: the thread still writes
        connector.close()
    return for_status(result.status, follower.interrupted)


#: what the progress line folds: the dashboard's events but intermediate results, which the
#: line does not show (unsubscribed, the engine skips building them)
_FOLDED = tuple(kind for kind in FOLDED_EVENTS if kind is not JobIntermediate)


def print_summary(result: ExperimentResult, config: ExperimentConfig, out: TextIO) -> None:
    import json

    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result.counts.items())) or "no jobs"
    out.write(f"experiment {result.eid} '{config.name}' {result.status}: {counts}\n")
    if result.reason:
        out.write(f"why: {result.reason}\n")
    if result.best_jid is not None:
        out.write(
            f"best job {result.best_jid}: score {result.best_score:g}  {json.dumps(result.best_config)}\n"
        )
    else:
        out.write("no job finished with a score\n")
    out.write(f"logs: {os.path.join(os.path.dirname(result.logs), log_relpath('<jid>', '<attempt>'))}\n")
