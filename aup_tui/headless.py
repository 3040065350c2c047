"""`aup-tui run --headless`: the experiment with a progress line, terminal prompts for passive
jobs, Ctrl-C to stop, and a summary at the end.

The experiment runs in a worker thread; this (main) thread owns the terminal: it draws progress
from engine events and asks for passive results, so Ctrl-C always lands here.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import TextIO

from backends.events import (
    Event,
    EventBus,
    ExperimentStarted,
    JobFailed,
    JobFinished,
    JobStarted,
    JobStopped,
    Notice,
    PassiveResultAccepted,
    PassiveResultWanted,
)
from backends.experiment import Experiment, ExperimentResult, summarize
from backends.jobs import JobError, ResultParseError

from .cli import EXIT_ERROR, EXIT_OK, EXIT_STOPPED


class Progress:
    """Jobs done / total, best score so far and elapsed time, as one redrawn line."""

    def __init__(self, total: int, maximize: bool, out: TextIO) -> None:
        self.total, self.maximize, self.out = total, maximize, out
        self.done = self.failed = self.stopped = self.running = 0
        self.best: tuple[float, int] | None = None
        self.start = time.monotonic()
        self.tty = out.isatty()
        self._last_line = 0.0
        self._lock = threading.RLock()

    def apply(self, event: Event) -> None:
        """Count one job event (called from engine threads)."""
        with self._lock:
            self._apply(event)

    def _apply(self, event: Event) -> None:
        if isinstance(event, JobStarted):
            self.running += 1
        elif isinstance(event, JobFinished):
            self.running -= 1
            self.done += 1
            if event.score is not None and (
                self.best is None or (event.score > self.best[0] if self.maximize else event.score < self.best[0])
            ):
                self.best = (event.score, event.jid)
        elif isinstance(event, JobFailed):
            self.running -= 1
            if not event.will_retry:
                self.failed += 1
                self.message(f"job {event.jid} failed: {event.error}")
            else:
                self.message(f"job {event.jid} failed, retrying: {event.error}")
        elif isinstance(event, JobStopped):
            self.running -= 1
            self.stopped += 1

    def line(self) -> str:
        ended = self.done + self.failed + self.stopped
        width = 24
        filled = int(width * ended / self.total) if self.total else width
        bar = "█" * filled + "░" * (width - filled)
        best = f"best {self.best[0]:.6g} (job {self.best[1]})" if self.best else "best —"
        elapsed = int(time.monotonic() - self.start)
        extra = f" failed {self.failed}" if self.failed else ""
        extra += f" stopped {self.stopped}" if self.stopped else ""
        return (f"{bar} {ended}/{self.total}  running {max(self.running, 0)}{extra}  {best}  "
                f"{elapsed // 60:02d}:{elapsed % 60:02d}")

    def draw(self, force: bool = False) -> None:
        if not self.total:
            return
        now = time.monotonic()
        if self.tty:
            if force or now - self._last_line > 0.1:
                self.out.write("\r\x1b[2K" + self.line())
                self.out.flush()
                self._last_line = now
        elif force or now - self._last_line > 5:
            self.out.write(self.line() + "\n")
            self.out.flush()
            self._last_line = now

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


def _read_stdin(events: queue.SimpleQueue, stream: TextIO) -> None:
    for line in stream:
        events.put(_Line(line.rstrip("\n")))
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
        jid, rm = self.jid, self.exp.resource_manager
        self.lines = []
        try:
            if text.strip().lower().startswith("fail"):
                rm.mark_failed(jid, text.split(":", 1)[1] if ":" in text else "")
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


def _is_number_or_fail(line: str) -> bool:
    text = line.strip()
    if text.lower().startswith("fail"):
        return True
    try:
        [float(v) for v in text.split(",")]
        return True
    except ValueError:
        return False


def run_headless(config, auppath: str, connector, out: TextIO | None = None, stdin: TextIO | None = None) -> int:
    """Run `config` to the end on the terminal; returns the exit status."""
    out = out or sys.stderr
    bus = EventBus()
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()  # what this thread must act on
    progress = Progress(0, config.maximize, out)
    bus.subscribe(progress.apply, kinds=_COUNTED)  # counted in the engine's threads: cheap
    bus.subscribe(events.put, kinds=(Notice, PassiveResultWanted, PassiveResultAccepted, JobFailed, JobStopped,
                                     ExperimentStarted))
    exp = Experiment(config, auppath=auppath, connector=connector, bus=bus)
    prompt = PassivePrompt(exp, progress)
    stdin_reader: threading.Thread | None = None
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["result"] = exp.run()
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc
        finally:
            events.put(None)  # type: ignore[arg-type]

    worker = threading.Thread(target=work, name="aup-experiment", daemon=True)
    interrupted = False
    worker.start()
    while True:
        try:
            event = events.get(timeout=0.1)
        except queue.Empty:
            progress.draw()
            continue
        except KeyboardInterrupt:
            interrupted = True
            _stop(exp, progress)
            continue
        if event is None:
            break
        if isinstance(event, ExperimentStarted):
            progress.total = event.n_samples
            progress.message(f"experiment {event.eid} '{config.name}' on {config.resource} "
                             f"({config.n_parallel} at a time) — Ctrl-C stops it")
        elif isinstance(event, Notice):
            progress.message(f"{event.level}: {event.message}")
        elif isinstance(event, PassiveResultWanted):
            prompt.start(event)
            if stdin_reader is None:
                stdin_reader = threading.Thread(target=_read_stdin, args=(events, stdin or sys.stdin), daemon=True)
                stdin_reader.start()
        elif isinstance(event, PassiveResultAccepted):
            prompt.cancel(event.jid, "was answered elsewhere")
        elif isinstance(event, (JobFailed, JobStopped)):
            prompt.cancel(event.jid, "ended")
        elif isinstance(event, _Line):
            prompt.feed(event.text)
        if prompt.at_end_of_input and not exp.stopping:
            progress.message("no more input on stdin: stopping the experiment (the job stays unanswered)")
            _stop(exp, progress)
        progress.draw()
    worker.join()
    progress.draw(force=True)
    out.write("\n")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    result: ExperimentResult = outcome.get("result") or summarize(connector, exp.eid)  # type: ignore[assignment]
    print_summary(result, config, out)
    connector.close()
    if result.status == "STOPPED" or interrupted:
        return EXIT_STOPPED
    return EXIT_OK if result.status == "FINISHED" else EXIT_ERROR


_COUNTED = (JobStarted, JobFinished, JobFailed, JobStopped)


def _stop(exp: Experiment, progress: Progress) -> None:
    progress.message("stopping: killing running jobs…")
    exp.stop()


def print_summary(result: ExperimentResult, config, out: TextIO) -> None:
    import json

    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result.counts.items())) or "no jobs"
    out.write(f"experiment {result.eid} '{config.name}' {result.status}: {counts}\n")
    if result.best_jid is not None:
        out.write(f"best job {result.best_jid}: score {result.best_score:g}  {json.dumps(result.best_config)}\n")
    else:
        out.write("no job finished with a score\n")
    out.write(f"logs: {os.path.join(result.logs, '<jid>.<attempt>.out')}\n")
