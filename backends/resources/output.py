"""A job's output as it arrives: copied to its log, published line by line, and its
`#Auptimizer:` results recorded (early stopping applied to each).

One pump per job attempt, fed chunks as they are read, so that a manager that follows many
jobs from one thread (the local reactor) and one that reads a stream to its end (SSH) share it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from ..events import JobOutput
from ..jobs import RESULT_PREFIX, Job, NonFiniteResultError, ResultParseError, parse_result_line
from ..remote import PRESCRIPT_FAILED, parse_prescript_failure

if TYPE_CHECKING:
    from .abstract import AbstractResourceManager

MAX_LINE = 1 << 20  # longer output lines are logged but not parsed


class OutputPump:
    """Feed it a job's output as lines (newline-terminated but the last; at most MAX_LINE bytes,
    as `readline(MAX_LINE)` gives them); a longer line is logged, not parsed. `keep(line)` False
    drops a line of the manager's own protocol from the log. `last` is the last non-empty line
    seen (for error messages)."""

    __slots__ = ("_manager", "_job", "_jid", "_eid", "_log", "_keep", "_publish", "_partial", "last")

    def __init__(
        self,
        manager: AbstractResourceManager,
        job: Job,
        log: BinaryIO,
        keep: Callable[[str], bool] | None = None,
    ) -> None:
        self._manager = manager
        self._job = job
        self._jid = manager.ensure_jid(job)
        self._eid = manager.eid  # None: `run` called directly, outside an experiment: nothing to tell
        self._log = log
        self._keep = keep
        self._publish = self._eid is not None and manager.bus.wants(JobOutput) and not job.save_model_flag
        self._partial = False  # inside a line longer than MAX_LINE
        self.last = ""

    def feed(self, chunk: bytes) -> None:
        complete = chunk.endswith(b"\n")
        if self._partial or (not complete and len(chunk) >= MAX_LINE):
            self._log.write(chunk)
            self._partial = not complete
            return
        line = chunk.decode("utf-8", "replace").rstrip("\r\n")
        if self._keep is not None and not self._keep(line):
            return
        self._log.write(chunk)
        self._log.flush()  # followed live by the log view (a no-op on an unbuffered log)
        if line:
            self.last = line if len(line) <= 200 else line[:200] + "…"
        if self._publish and self._eid is not None:
            self._manager.bus.publish(JobOutput(eid=self._eid, jid=self._jid, line=line[:2000]))
        if RESULT_PREFIX in line:
            job = self._job
            try:
                values = parse_result_line(line)
            except NonFiniteResultError as exc:
                job.error = job.error or exc.for_job(self._jid)
                return
            except ResultParseError as exc:
                job.error = job.error or str(exc)
                return
            if values is not None:
                self._manager.record_result(job, values)
        elif line.startswith(PRESCRIPT_FAILED):
            self._job.prescript_status = parse_prescript_failure(line)
