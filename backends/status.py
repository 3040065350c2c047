"""The one place a job's or an experiment's status is named, classified and moved on.

The values are the strings the store records (and `status --json` prints), so a status read back
from the store compares equal to its member: `JobStatus(doc["status"])`. Which moves are allowed
is written down once (as Optuna's `TrialState`); `advance` refuses any other, so a bug that would
record a finished job as running again fails loudly instead of corrupting the record.
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import TypeVar

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # Python 3.10: the same behaviour for what we use (str() is the value)

    class StrEnum(str, Enum):
        """`enum.StrEnum` of Python 3.11."""

        def __str__(self) -> str:
            return str(self.value)


class IllegalTransition(ValueError):
    """A status change the model does not allow (an engine bug, never a person's mistake)."""


class JobStatus(StrEnum):
    """A job's status. QUEUED and RETRY live in memory only; the store records the others."""

    #: proposed, not started yet
    QUEUED = "QUEUED"
    #: an attempt runs
    RUNNING = "RUNNING"
    #: a passive job waits for a person's answer
    WAITING = "WAITING"
    #: an attempt failed and the job will run again (the store keeps it RUNNING meanwhile)
    RETRY = "RETRY"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    #: stopped by a person (or with its experiment)
    STOPPED = "STOPPED"
    #: stopped by the early-stopping policy
    EARLY_STOPPED = "EARLY_STOPPED"
    #: its process was gone when the store was next opened (a crash, kill -9)
    INTERRUPTED = "INTERRUPTED"

    @property
    def is_live(self) -> bool:
        """Running or waiting for a person: it holds a resource and can be stopped."""
        return self in _LIVE_JOB

    @property
    def is_final(self) -> bool:
        """Ended for good: only a new attempt (a rerun) moves it again."""
        return self in _FINAL_JOB

    @property
    def is_stopped(self) -> bool:
        """Stopped, by a person or by the early-stopping policy."""
        return self in (JobStatus.STOPPED, JobStatus.EARLY_STOPPED)

    @property
    def is_failed(self) -> bool:
        """Counted as failed: it failed, or was interrupted."""
        return self in (JobStatus.FAILED, JobStatus.INTERRUPTED)

    def can_become(self, new: JobStatus) -> bool:
        return new in _JOB_MOVES[self]


_LIVE_JOB = frozenset({JobStatus.RUNNING, JobStatus.WAITING})
_FINAL_JOB = frozenset(
    {
        JobStatus.FINISHED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
        JobStatus.EARLY_STOPPED,
        JobStatus.INTERRUPTED,
    }
)
#: how an attempt can end
_ENDINGS = _FINAL_JOB | {JobStatus.RETRY}
_JOB_MOVES: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING}),
    JobStatus.RUNNING: _ENDINGS | {JobStatus.WAITING},
    JobStatus.WAITING: _ENDINGS | {JobStatus.RUNNING},
    JobStatus.RETRY: frozenset({JobStatus.RUNNING}),
    # a new attempt of an ended job: `rerun --failed`, save_model's re-run, a library user's Job run again
    **{status: frozenset({JobStatus.RUNNING}) for status in _FINAL_JOB},
}


class ExperimentStatus(StrEnum):
    """An experiment's status, as the store records it."""

    #: made, not started yet
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    #: stopped by a person
    STOPPED = "STOPPED"
    #: its process was gone when the store was next opened
    INTERRUPTED = "INTERRUPTED"

    @property
    def is_live(self) -> bool:
        """Starting or running: jobs may still start."""
        return self in (ExperimentStatus.PENDING, ExperimentStatus.RUNNING)

    @property
    def is_final(self) -> bool:
        return not self.is_live

    @property
    def is_resumable(self) -> bool:
        """Ended before its budget was spent (stopped, failed, interrupted): `resume` continues it."""
        return self in (ExperimentStatus.STOPPED, ExperimentStatus.FAILED, ExperimentStatus.INTERRUPTED)

    def can_become(self, new: ExperimentStatus) -> bool:
        return new in _EXPERIMENT_MOVES[self]


_EXPERIMENT_MOVES: dict[ExperimentStatus, frozenset[ExperimentStatus]] = {
    ExperimentStatus.PENDING: frozenset({ExperimentStatus.RUNNING, ExperimentStatus.FAILED}),
    ExperimentStatus.RUNNING: frozenset(
        {
            ExperimentStatus.FINISHED,
            ExperimentStatus.FAILED,
            ExperimentStatus.STOPPED,
            ExperimentStatus.INTERRUPTED,
        }
    ),
    # `resume` runs the rest of an ended experiment's budget
    **{
        status: frozenset({ExperimentStatus.RUNNING})
        for status in (
            ExperimentStatus.FINISHED,
            ExperimentStatus.FAILED,
            ExperimentStatus.STOPPED,
            ExperimentStatus.INTERRUPTED,
        )
    },
}


Status = TypeVar("Status", JobStatus, ExperimentStatus)


def advance(current: Status, new: Status) -> Status:
    """`new`, once checked: IllegalTransition for a move the model does not allow."""
    if type(new) is not type(current) or not current.can_become(new):
        what = "a job" if isinstance(current, JobStatus) else "an experiment"
        raise IllegalTransition(f"{what} can't go from {current} to {new}")
    return new
