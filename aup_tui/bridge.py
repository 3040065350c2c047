"""From the engine to the app: engine events and store snapshots → one experiment state.

`ExperimentState` is the model every dashboard widget renders. It changes in two ways, both on
the app's event loop:

- `apply(events)`: engine events of an experiment this process runs (`EngineBridge` collects
  them from engine threads and wakes the app with one `EngineEvents` message per batch);
- `merge_store(experiment_doc, job_docs)`: a snapshot read from the store by a worker thread
  (watch mode: the experiment runs in another process).

Either returns a `Changes` naming the jobs whose rows changed, so the job table touches only
those rows. A *source* (`LiveSource` / `StoreSource`) carries user requests the other way:
stop a job, stop the experiment, answer a passive job.

Nothing here imports Textual except the message classes, and nothing here does I/O on the
event loop: the store is read by the dashboard's worker thread.
"""

from __future__ import annotations

import os
import shlex
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aup_tui_backends.events import (
    Event,
    EventBus,
    ExperimentFinished,
    ExperimentStarted,
    JobFailed,
    JobFinished,
    JobIntermediate,
    JobQueued,
    JobStarted,
    JobStopped,
    Notice,
    PassiveResultAccepted,
    PassiveResultWanted,
)
from aup_tui_backends.store.connector import better
from textual.message import Message

LIVE = ("RUNNING", "WAITING")
#: What counts as "failed" in the header's progress bar.
FAILED_STATES = ("FAILED", "INTERRUPTED")
STOPPED_STATES = ("STOPPED", "EARLY_STOPPED")


@dataclass
class JobRow:
    """One job as the dashboard shows it."""

    jid: int
    status: str = "QUEUED"
    config: dict = field(default_factory=dict)
    resource: str = ""
    score: float | None = None
    start: float | None = None
    end: float | None = None
    attempts: int = 0
    error: str | None = None
    results: int = 0  # intermediate results seen
    rid: int | None = None  # the resource of the running attempt
    pid: int | None = None  # its process-group leader, for a local job (store records, watch mode)

    def duration(self, now: float) -> float | None:
        if self.start is None:
            return None
        return max(0.0, (self.end if self.end is not None else now) - self.start)


@dataclass(frozen=True)
class PassiveWant:
    """A passive job waiting for a person (what the passive form needs)."""

    eid: int
    jid: int
    command: str
    workingdir: str
    config_path: str


@dataclass
class Changes:
    """What an update touched: job rows, the header, the score plot."""

    jids: set[int] = field(default_factory=set)
    header: bool = False
    plot: bool = False
    passive: list[PassiveWant] = field(default_factory=list)
    notices: list[tuple[str, str]] = field(default_factory=list)  # (level, message)
    ended: bool = False

    def __bool__(self) -> bool:
        return bool(self.jids or self.header or self.plot or self.passive or self.notices or self.ended)


class ExperimentState:
    """The experiment as the dashboard sees it; updated incrementally, O(changes) per update."""

    def __init__(
        self,
        eid: int | None = None,
        name: str = "",
        status: str = "CONNECTING",
        n_samples: int = 0,
        target: str = "max",
    ) -> None:
        self.eid = eid
        self.name = name
        self.status = status
        self.n_samples = n_samples
        self.target = target
        self.resource = ""
        self.host = ""  # the machine that runs the experiment (from the store; "" when unknown)
        self.start: float | None = None
        self.end: float | None = None
        self.jobs: dict[int, JobRow] = {}
        self.counts: Counter[str] = Counter()
        self.best_jid: int | None = None
        self.best_score: float | None = None
        #: (jid, score) of every job that finished with a score, in the order they finished.
        self.scores: list[tuple[int, float]] = []
        #: the best score after each entry of `scores` (kept incrementally)
        self.best_trace: list[float] = []
        #: the scores alone, same order as `scores` (what the plot draws)
        self.score_values: list[float] = []
        #: when each of `scores` finished (epoch seconds), for the plot's time axis
        self.score_times: list[float] = []
        self._scored: set[int] = set()
        self._best_end: float | None = None  # when the best job finished (the tie rule)
        #: passive jobs waiting for a person, by job id
        self.waiting: dict[int, PassiveWant] = {}
        self.last_notice: tuple[str, str] | None = None
        self.reason = ""  # why the experiment FAILED

    # -- derived --------------------------------------------------------------------------

    @property
    def maximize(self) -> bool:
        return self.target == "max"

    @property
    def total(self) -> int:
        return max(self.n_samples or 0, len(self.jobs))

    @property
    def done(self) -> int:
        return self.counts["FINISHED"]

    @property
    def running(self) -> int:
        return self.counts["RUNNING"] + self.counts["WAITING"]

    @property
    def failed(self) -> int:
        return sum(self.counts[s] for s in FAILED_STATES)

    @property
    def stopped(self) -> int:
        return sum(self.counts[s] for s in STOPPED_STATES)

    @property
    def is_live(self) -> bool:
        return self.status in ("RUNNING", "CONNECTING")

    def elapsed(self, now: float) -> float:
        if self.start is None:
            return 0.0
        return max(0.0, (self.end if self.end is not None else now) - self.start)

    def best_so_far(self) -> list[float]:
        """The best score after each finished job, in finishing order."""
        return self.best_trace

    # -- mutation helpers -----------------------------------------------------------------

    def _row(self, jid: int) -> JobRow:
        row = self.jobs.get(jid)
        if row is None:
            row = self.jobs[jid] = JobRow(jid)
            self.counts[row.status] += 1
        return row

    def _set_status(self, row: JobRow, status: str) -> None:
        if row.status != status:
            self.counts[row.status] -= 1
            self.counts[status] += 1
            row.status = status

    def _scored_job(self, jid: int, score: float | None) -> bool:
        """Record a finished job's score; True when the best changed."""
        if score is None or jid in self._scored:
            return False
        self._scored.add(jid)
        self.scores.append((jid, score))
        self.score_values.append(score)
        end = self.jobs[jid].end if jid in self.jobs else None
        self.score_times.append(
            end if end is not None else (self.score_times[-1] if self.score_times else 0.0)
        )
        prev = self.best_trace[-1] if self.best_trace else None
        self.best_trace.append(
            score if prev is None or (score > prev if self.maximize else score < prev) else prev
        )
        than = (
            None
            if self.best_score is None or self.best_jid is None
            else (self.best_score, self._best_end, self.best_jid)
        )
        if better(score, end, jid, than, self.maximize):  # the store's rule: ties go to the first finished
            self.best_jid, self.best_score, self._best_end = jid, score, end
            return True
        return False

    def _set_best(self, jid: int, score: float | None) -> None:
        """The best job as the store names it (its end kept for the tie rule)."""
        row = self.jobs.get(jid)
        self.best_jid, self.best_score, self._best_end = jid, score, row.end if row is not None else None

    # -- engine events --------------------------------------------------------------------

    def apply(self, events: Iterable[Event]) -> Changes:
        ch = Changes()
        for ev in events:
            self._apply_one(ev, ch)
        return ch

    def _apply_one(self, ev: Event, ch: Changes) -> None:
        if isinstance(ev, ExperimentStarted):
            self.eid, self.name, self.n_samples, self.target = ev.eid, ev.name, ev.n_samples, ev.target
            self.resource, self.status = ev.resource, "RUNNING"
            self.start = self.start or ev.time
            ch.header = True
            return
        if isinstance(ev, ExperimentFinished):
            self.status, self.end, self.reason = ev.status, ev.time, ev.reason
            if ev.best_jid is not None:
                self._set_best(ev.best_jid, ev.best_score)
            self.waiting.clear()
            ch.header = ch.ended = True
            return
        if isinstance(ev, Notice):
            self.last_notice = (ev.level, ev.message)
            ch.notices.append((ev.level, ev.message))
            return
        jid = getattr(ev, "jid", None)
        if jid is None:
            return
        if isinstance(ev, JobQueued):
            row = self._row(jid)
            row.config = dict(ev.config)
        elif isinstance(ev, JobStarted):
            row = self._row(jid)
            self._set_status(row, "RUNNING")
            row.resource, row.attempts, row.rid = ev.resource, ev.attempt, ev.rid
            row.start = row.start or ev.time
            row.end, row.error = None, None
        elif isinstance(ev, JobIntermediate):
            row = self._row(jid)
            row.results = max(row.results, ev.index + 1)
            if row.status == "RUNNING":
                row.score = ev.values[0] if ev.values else row.score
        elif isinstance(ev, JobFinished):
            row = self._row(jid)
            self._set_status(row, "FINISHED")
            row.score, row.end = ev.score, ev.end if ev.end is not None else ev.time  # the store's end
            new = jid not in self._scored and ev.score is not None
            ch.header |= self._scored_job(jid, ev.score)
            ch.plot |= new
        elif isinstance(ev, JobFailed):
            row = self._row(jid)
            row.error, row.score = ev.error, ev.score
            if ev.will_retry:
                self._set_status(row, "RUNNING")
            else:
                self._set_status(row, "FAILED")
                row.end = ev.time
        elif isinstance(ev, JobStopped):
            row = self._row(jid)
            self._set_status(row, "EARLY_STOPPED" if ev.reason.startswith("early stopped") else "STOPPED")
            row.score, row.end, row.error = ev.score, ev.time, ev.reason
            if self.waiting.pop(jid, None) is not None:
                ch.header = True
        elif isinstance(ev, PassiveResultWanted):
            row = self._row(jid)
            self._set_status(row, "WAITING")
            want = PassiveWant(ev.eid, jid, ev.command, ev.workingdir, ev.config_path)
            self.waiting[jid] = want
            ch.passive.append(want)
        elif isinstance(ev, PassiveResultAccepted):
            row = self._row(jid)
            self._set_status(row, "RUNNING")
            self.waiting.pop(jid, None)
        else:
            return
        if isinstance(ev, (JobFinished, JobFailed)):
            self.waiting.pop(jid, None)
        ch.jids.add(jid)
        ch.header = True

    # -- store snapshots ------------------------------------------------------------------

    def merge_store(self, exp: dict | None, jobs: list[dict]) -> Changes:
        """Bring the state in line with what the store says (watch mode, or a finished experiment)."""
        ch = Changes()
        if exp:
            before = (self.status, self.name, self.n_samples, self.best_jid, self.best_score, self.end)
            self.eid = exp.get("eid", self.eid)
            self.name = exp.get("name") or self.name
            self.n_samples = int(exp.get("n_samples") or 0)
            self.target = exp.get("target") or self.target
            self.resource = exp.get("resource") or self.resource
            self.host = exp.get("host") or self.host
            self.start = exp.get("start") or self.start
            self.end = exp.get("end")
            was_running = self.status == "RUNNING"
            self.status = exp.get("status") or self.status
            if (self.status, self.name, self.n_samples, self.best_jid, self.best_score, self.end) != before:
                ch.header = True
            if was_running and not self.is_live:
                ch.ended = True
            self.reason = exp.get("reason") or ""
        workingdir = (exp or {}).get("workingdir") or "."
        script = (exp or {}).get("script") or ""
        new_scores = False
        for doc in jobs:
            jid = doc["jid"]
            row = self.jobs.get(jid)
            if row is not None:  # where it runs matters to the monitors, not to the table
                row.rid, row.pid = doc.get("rid"), doc.get("pid")
            attempts = len(doc.get("attempts") or ())
            score = doc.get("score")
            if score is None and doc.get("status") == "RUNNING" and doc.get("values"):
                score = doc["values"][0]  # its latest intermediate result, as in a live run
            fields = (
                doc.get("status"),
                doc.get("resource") or "",
                score,
                doc.get("start"),
                doc.get("end"),
                attempts,
                doc.get("error"),
            )
            if (
                row is not None
                and (row.status, row.resource, row.score, row.start, row.end, row.attempts, row.error)
                == fields
                and row.config
            ):
                continue
            row = self._row(jid)
            self._set_status(row, fields[0] or "QUEUED")
            row.config = dict(doc.get("config") or {})
            row.rid, row.pid = doc.get("rid"), doc.get("pid")
            (row.resource, row.score, row.start, row.end, row.attempts, row.error) = fields[1:]
            ch.jids.add(jid)
            if row.status == "FINISHED":
                new_scores |= jid not in self._scored
                self._scored_job(jid, row.score)
            if row.status == "WAITING" and jid not in self.waiting and self.eid is not None:
                config_path = os.path.join(workingdir, "jobs", f"{jid}.json")
                rel = script if script.startswith((".", "/")) else "./" + script
                command = f"cd {shlex.quote(workingdir)} && {shlex.quote(rel)} jobs/{jid}.json"
                want = PassiveWant(self.eid, jid, command, workingdir, config_path)
                self.waiting[jid] = want
                ch.passive.append(want)
            elif row.status != "WAITING":
                self.waiting.pop(jid, None)
        if exp and exp.get("best_jid") is not None:
            self._set_best(exp["best_jid"], exp.get("best_score"))
        if ch.jids:
            ch.header = True
        ch.plot = new_scores
        return ch


# -- Textual messages ---------------------------------------------------------------------


class EngineEvents(Message):
    """Engine events are waiting in the bridge: drain them (one message per batch)."""


class StoreSnapshot(Message):
    """A store read finished (watch mode); `exp` is None when the experiment is gone."""

    def __init__(self, exp: dict | None, jobs: list[dict] | None, error: str | None = None) -> None:
        super().__init__()
        self.exp, self.jobs, self.error = exp, jobs, error


class EngineBridge:
    """Collects engine events from engine threads and wakes `target` once per batch.

    The bus callback never blocks: it appends to a list and posts at most one `EngineEvents`
    message until the app drains the batch.
    """

    #: what the state model uses; JobOutput lines (the bulk) are not subscribed, so the engine
    #: skips building them (the job detail screen follows the log file instead)
    KINDS = (
        ExperimentStarted,
        ExperimentFinished,
        JobQueued,
        JobStarted,
        JobIntermediate,
        JobFinished,
        JobFailed,
        JobStopped,
        PassiveResultWanted,
        PassiveResultAccepted,
        Notice,
    )

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self._lock = threading.Lock()
        self._pending: list[Event] = []
        self._posted = False
        self._target: Any = None
        self._unsubscribe: Callable[[], None] | None = bus.subscribe(self._on_event, kinds=self.KINDS)

    def attach(self, target: Any) -> None:
        """Wake `target` (a Textual MessagePump) from now on; wakes it now if events wait."""
        with self._lock:
            self._target = target
            wake = bool(self._pending) and not self._posted
            self._posted = self._posted or wake
        if wake:
            target.post_message(EngineEvents())

    def _on_event(self, event: Event) -> None:
        with self._lock:
            self._pending.append(event)
            if self._posted or self._target is None:
                return
            self._posted = True
            target = self._target
        target.post_message(EngineEvents())

    def drain(self) -> list[Event]:
        with self._lock:
            events, self._pending = self._pending, []
            self._posted = False
        return events

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        with self._lock:
            self._target = None


# -- sources: where user requests go ------------------------------------------------------


class LiveSource:
    """An experiment this process runs: requests go straight to the engine."""

    live = True

    def __init__(self, experiment: Any, bridge: EngineBridge) -> None:
        self.experiment = experiment
        self.bridge = bridge

    @property
    def eid(self) -> int | None:
        return self.experiment.eid

    def stop_job(self, jid: int) -> bool:
        return self.experiment.stop_job(jid)

    def stop_experiment(self) -> None:
        self.experiment.stop()

    def submit(self, jid: int, text: str) -> float:
        return self.experiment.resource_manager.submit_result(jid, text)

    def mark_failed(self, jid: int, reason: str) -> None:
        self.experiment.resource_manager.mark_failed(jid, reason)


class StoreSource:
    """An experiment in the store (run by another process, or over): requests go through the store."""

    live = False

    def __init__(self, connector: Any, eid: int) -> None:
        self.connector = connector
        self.eid = eid

    def stop_job(self, jid: int) -> bool:
        self.connector.request_stop(self.eid, jid)
        return True

    def stop_experiment(self) -> None:
        self.connector.request_stop(self.eid)

    def submit(self, jid: int, text: str) -> float:
        from aup_tui_backends.jobs import parse_pasted_output

        results = parse_pasted_output(text)  # raises ResultParseError: the form shows it
        self.connector.submit_passive(self.eid, jid, text)
        return results[-1][0]

    def mark_failed(self, jid: int, reason: str) -> None:
        self.connector.submit_passive(self.eid, jid, reason, failed=True)


def fixed_clock(t: float) -> Callable[[], float]:
    """A clock that always says `t` (tests and screenshots)."""
    return lambda: t


wall_clock: Callable[[], float] = time.time
