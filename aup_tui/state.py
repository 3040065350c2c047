"""The experiment as every view sees it: one plain model that engine events and store snapshots
fold into.

`ExperimentState` changes in two ways:

- `apply(events)`: engine events of an experiment this process runs;
- `merge_store(experiment_doc, job_docs)`: a snapshot read from the store (watch mode: the
  experiment runs in another process; or catching up with one that already ran a while).

Either returns a `Changes` naming the jobs whose rows changed, so a view redraws only those. The
dashboard and the headless progress line fold the same model, so both count and rank the same way.
A job's status is the one its event or record carries (`JobStatus`); nothing here works one out
from other fields. No Textual, no I/O: callers read the store and pass what they read.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from aup_tui_backends.events import (
    Event,
    ExperimentFinished,
    ExperimentStarted,
    JobEvent,
    JobFailed,
    JobFinished,
    JobIntermediate,
    JobOutput,
    JobQueued,
    JobStarted,
    JobStopped,
    Notice,
    PassiveResultAccepted,
    PassiveResultWanted,
)
from aup_tui_backends.jobs import passive_command
from aup_tui_backends.status import ExperimentStatus, JobStatus
from aup_tui_backends.store.connector import better

#: statuses that count as failed (a set: a store snapshot checks 10,000 jobs against it)
FAILED = frozenset(s for s in JobStatus if s.is_failed)

#: the experiment's status before a view has heard from it (a view's, not the engine's)
CONNECTING = "CONNECTING"

#: the engine events `ExperimentState.apply` folds. JobOutput lines (the bulk) are not among them,
#: so an engine whose only subscriber folds these skips building them (the job detail screen
#: follows the log file instead).
FOLDED_EVENTS: tuple[type[Event], ...] = (
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


@dataclass
class JobRow:
    """One job as the views show it."""

    jid: int
    #: a JobStatus, as the job's last event or record carries it
    status: str = JobStatus.QUEUED
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


@dataclass(frozen=True)
class Problem:
    """Something that went wrong, kept so it can be read after its toast is gone: a failed job
    (`jid` set), the experiment's failure or an engine notice at warning level or above."""

    time: float
    level: str  # "warning" or "error"
    message: str
    jid: int | None = None


#: the notice levels kept as problems
PROBLEM_LEVELS = ("warning", "error")


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
    """The experiment as the dashboard and the headless line see it; updated incrementally,
    O(changes) per update."""

    def __init__(
        self,
        eid: int | None = None,
        name: str = "",
        status: str = CONNECTING,
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
        #: what went wrong, in the order it was heard of (`recent_problems` sorts it)
        self.problems: list[Problem] = []
        self._problem_keys: set[tuple[object, object]] = set()  # (jid, attempts), (node, since) kept

    # -- derived --------------------------------------------------------------------------

    @property
    def maximize(self) -> bool:
        return self.target == "max"

    @property
    def total(self) -> int:
        return max(self.n_samples or 0, len(self.jobs))

    @property
    def done(self) -> int:
        return self.counts[JobStatus.FINISHED]

    @property
    def running(self) -> int:
        """Running or waiting for a person."""
        return sum(self.counts[s] for s in JobStatus if s.is_live)

    @property
    def failed(self) -> int:
        """Failed or interrupted (what the header's progress bar counts as failed)."""
        return sum(self.counts[s] for s in JobStatus if s.is_failed)

    @property
    def stopped(self) -> int:
        """Stopped by a person or by the early-stopping policy."""
        return sum(self.counts[s] for s in JobStatus if s.is_stopped)

    @property
    def ended(self) -> int:
        """Jobs that are over: finished, failed or stopped."""
        return self.done + self.failed + self.stopped

    @property
    def is_live(self) -> bool:
        return self.status in (ExperimentStatus.RUNNING, CONNECTING)

    def elapsed(self, now: float) -> float:
        if self.start is None:
            return 0.0
        return max(0.0, (self.end if self.end is not None else now) - self.start)

    def recent_problems(self) -> list[Problem]:
        """The problems, newest first."""
        return sorted(self.problems, key=lambda p: p.time, reverse=True)

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

    def _job_failed(self, row: JobRow, when: float | None) -> bool:
        """Keep a failed job (once per attempt) among the problems; True when it was new."""
        key = (row.jid, row.attempts)
        if key in self._problem_keys:
            return False
        self._problem_keys.add(key)
        why = row.error or "no reason given"
        status = row.status.lower()
        self.problems.append(Problem(when or 0.0, "error", f"job {row.jid} {status}: {why}", row.jid))
        return True

    def _experiment_failed(self, when: float | None) -> bool:
        """Keep the experiment's failure (once) among the problems; True when it was new."""
        key = (None, 0)
        if self.status != ExperimentStatus.FAILED or key in self._problem_keys:
            return False
        self._problem_keys.add(key)
        why = f": {self.reason}" if self.reason else ""
        self.problems.append(Problem(when or 0.0, "error", f"experiment {self.eid} failed{why}"))
        return True

    def node_down(self, node: str, error: str, since: float) -> bool:
        """Keep a node found DOWN among the problems, once each time it goes down; True when new.
        (The node monitor is no engine event: the view that hears of it tells the state.)"""
        key = (node, since)
        if key in self._problem_keys:
            return False
        self._problem_keys.add(key)
        self.problems.append(Problem(since, "warning", f"node {node} down: {error or 'no answer'}"))
        return True

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
            self.resource, self.status = ev.resource, ExperimentStatus.RUNNING
            self.start = self.start or ev.time
            ch.header = True
            return
        if isinstance(ev, ExperimentFinished):
            self.status, self.end, self.reason = ev.status, ev.time, ev.reason
            self._experiment_failed(ev.time)
            if ev.best_jid is not None:
                self._set_best(ev.best_jid, ev.best_score)
            self.waiting.clear()
            ch.header = ch.ended = True
            return
        if isinstance(ev, Notice):
            self.last_notice = (ev.level, ev.message)
            ch.notices.append((ev.level, ev.message))
            if ev.level in PROBLEM_LEVELS:
                self.problems.append(Problem(ev.time, ev.level, ev.message))
                ch.header = True  # its count
            return
        if not isinstance(ev, JobEvent) or isinstance(ev, JobOutput):
            return
        jid = ev.jid
        row = self._row(jid)
        if isinstance(ev, JobQueued):
            row.config = dict(ev.config)
        elif isinstance(ev, JobIntermediate):  # a result while it runs: its status is unchanged
            row.results = max(row.results, ev.index + 1)
            if row.status == JobStatus.RUNNING:
                row.score = ev.values[0] if ev.values else row.score
        else:
            self._set_status(row, ev.status)
            self._fold_job_event(ev, row, ch)
        ch.jids.add(jid)
        ch.header = True

    def _fold_job_event(self, ev: JobEvent, row: JobRow, ch: Changes) -> None:
        """What a job event says besides its status (already set): times, score, error, the wait."""
        if isinstance(ev, JobStarted):
            row.resource, row.attempts, row.rid = ev.resource, ev.attempt, ev.rid
            row.start = row.start or ev.time
            row.end, row.error = None, None
        elif isinstance(ev, JobFinished):
            row.score, row.end = ev.score, ev.end if ev.end is not None else ev.time  # the store's end
            new = ev.jid not in self._scored and ev.score is not None
            ch.header |= self._scored_job(ev.jid, ev.score)
            ch.plot |= new
        elif isinstance(ev, JobFailed):
            row.error, row.score = ev.error, ev.score
            if JobStatus(ev.status).is_final:
                row.end = ev.time
            if JobStatus(ev.status).is_failed:
                self._job_failed(row, ev.time)
        elif isinstance(ev, JobStopped):
            row.score, row.end, row.error = ev.score, ev.time, ev.reason
        elif isinstance(ev, PassiveResultWanted):
            want = PassiveWant(ev.eid, ev.jid, ev.command, ev.workingdir, ev.config_path)
            self.waiting[ev.jid] = want
            ch.passive.append(want)
        if ev.status != JobStatus.WAITING:
            self.waiting.pop(ev.jid, None)

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
            was_running = self.status == ExperimentStatus.RUNNING
            self.status = exp.get("status") or self.status
            if (self.status, self.name, self.n_samples, self.best_jid, self.best_score, self.end) != before:
                ch.header = True
            if was_running and not self.is_live:
                ch.ended = True
            self.reason = exp.get("reason") or ""
            ch.header |= self._experiment_failed(self.end)
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
            if score is None and doc.get("status") == JobStatus.RUNNING and doc.get("values"):
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
            self._set_status(row, fields[0] or JobStatus.QUEUED)
            row.config = dict(doc.get("config") or {})
            row.rid, row.pid = doc.get("rid"), doc.get("pid")
            (row.resource, row.score, row.start, row.end, row.attempts, row.error) = fields[1:]
            ch.jids.add(jid)
            if row.status in FAILED:
                self._job_failed(row, row.end or row.start)
            if row.status == JobStatus.FINISHED:
                new_scores |= jid not in self._scored
                self._scored_job(jid, row.score)
            if row.status == JobStatus.WAITING and jid not in self.waiting and self.eid is not None:
                config_path = os.path.join(workingdir, "jobs", f"{jid}.json")
                command = passive_command(workingdir, script, jid)
                want = PassiveWant(self.eid, jid, command, workingdir, config_path)
                self.waiting[jid] = want
                ch.passive.append(want)
            elif row.status != JobStatus.WAITING:
                self.waiting.pop(jid, None)
        if exp and exp.get("best_jid") is not None:
            self._set_best(exp["best_jid"], exp.get("best_score"))
        if ch.jids:
            ch.header = True
        ch.plot = new_scores
        return ch
