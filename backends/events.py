"""Typed engine events and the thread-safe bus that carries them.

The engine publishes from whatever thread did the work (a job's reader thread, the experiment
loop); subscribers must return quickly — a UI hands the event to its own loop
(`App.call_from_thread` / `post_message`) and returns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .status import ExperimentStatus, JobStatus


@dataclass(frozen=True)
class Event:
    """Base of every engine event; `time` is wall-clock seconds."""

    time: float = field(default_factory=time.time, kw_only=True)


@dataclass(frozen=True)
class ExperimentStarted(Event):
    eid: int
    name: str
    n_samples: int
    target: str
    resource: str


@dataclass(frozen=True)
class ExperimentFinished(Event):
    eid: int
    status: ExperimentStatus
    best_jid: int | None
    best_score: float | None
    reason: str = ""  # why, when FAILED


@dataclass(frozen=True)
class JobEvent(Event):
    """Something happened to job `jid` of experiment `eid`. `status` is the job's status after
    it, as the engine decided it: a view shows it as is and never works it out from other fields."""

    eid: int
    jid: int
    status: JobStatus = field(default=JobStatus.RUNNING, kw_only=True)


@dataclass(frozen=True)
class JobQueued(JobEvent):
    config: dict[str, Any]
    status: JobStatus = field(default=JobStatus.QUEUED, kw_only=True)


@dataclass(frozen=True)
class JobStarted(JobEvent):
    rid: int
    resource: str
    attempt: int


@dataclass(frozen=True)
class JobOutput(JobEvent):
    line: str


@dataclass(frozen=True)
class JobIntermediate(JobEvent):
    index: int
    values: tuple[float, ...]


@dataclass(frozen=True)
class JobFinished(JobEvent):
    score: float | None
    values: tuple[float, ...] = ()
    #: the end time the store recorded (None: not recorded); the best job's tie rule uses it,
    #: not `time`, so every view names the job the store names
    end: float | None = None
    status: JobStatus = field(default=JobStatus.FINISHED, kw_only=True)


@dataclass(frozen=True)
class JobFailed(JobEvent):
    """An attempt failed: the job is FAILED, or RUNNING when it will be retried (`will_retry`;
    the store keeps it RUNNING until its last attempt ends)."""

    error: str
    score: float | None = None
    will_retry: bool = False
    status: JobStatus = field(default=JobStatus.FAILED, kw_only=True)

    def __post_init__(self) -> None:
        if self.will_retry and self.status is JobStatus.FAILED:
            object.__setattr__(self, "status", JobStatus.RUNNING)


@dataclass(frozen=True)
class JobStopped(JobEvent):
    """Stopped by a person (STOPPED) or by the early-stopping policy (EARLY_STOPPED); `reason`
    is for people to read."""

    reason: str
    score: float | None = None
    status: JobStatus = field(default=JobStatus.STOPPED, kw_only=True)


@dataclass(frozen=True)
class ResourceTaken(Event):
    rid: int
    jid: int


@dataclass(frozen=True)
class ResourceFreed(Event):
    rid: int


@dataclass(frozen=True)
class PassiveResultWanted(JobEvent):
    """A passive job waits for a person to run `command` and hand back its output."""

    command: str
    workingdir: str
    config_path: str
    status: JobStatus = field(default=JobStatus.WAITING, kw_only=True)


@dataclass(frozen=True)
class PassiveResultAccepted(JobEvent):
    """A person answered a waiting passive job: it runs on (its result is being recorded)."""


@dataclass(frozen=True)
class Notice(Event):
    """A one-line message for the person (e.g. fewer resources than n_parallel)."""

    message: str
    eid: int | None = None
    level: str = "info"


@dataclass(frozen=True)
class StoreProblem(Notice):
    """The store can't be written (disk full, I/O error): no job starts, finished jobs' records
    wait in memory. Published once when it starts (`ok` False) and once when writes succeed again
    (`ok` True); `path` is the file refused, `pending` the records waiting then."""

    path: str = ""
    pending: int = 0
    ok: bool = False


Subscriber = Callable[[Event], Any]


class EventBus:
    """Publish/subscribe across threads; subscribers pick the event kinds they want."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: tuple[tuple[Subscriber, tuple[type[Event], ...]], ...] = ()

    def subscribe(
        self, callback: Subscriber, kinds: tuple[type[Event], ...] = (Event,)
    ) -> Callable[[], None]:
        """Register `callback` for events of `kinds`; returns a function that unsubscribes it."""
        entry = (callback, kinds)
        with self._lock:
            self._subscribers = self._subscribers + (entry,)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not entry)

        return unsubscribe

    def wants(self, kind: type[Event]) -> bool:
        """Whether anyone listens to `kind`: lets hot paths skip building events nobody reads."""
        return any(issubclass(kind, kinds) for _, kinds in self._subscribers)

    def publish(self, event: Event) -> None:
        for callback, kinds in self._subscribers:
            if not isinstance(event, kinds):
                continue
            try:
                callback(event)
            except Exception:  # a broken subscriber must not break the engine
                import logging

                logging.getLogger(__name__).exception("event subscriber failed")
