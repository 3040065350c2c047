"""The person as a resource: they run each job by hand and hand back its output.

Auptimizer blocks on `input()` here. We publish a `PassiveResultWanted` event instead and wait
for any UI (the TUI's form, the headless prompt, another process through the store) to call
`submit_result` or `mark_failed`.
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import JobError
from ..events import PassiveResultAccepted, PassiveResultWanted
from ..jobs import Job, ResultParseError, parse_pasted_output
from ..status import JobStatus
from ..store import TinyDBConnector
from .abstract import AbstractResourceManager, Callback


class PassiveResourceManager(AbstractResourceManager):
    """`PassiveResourceManager(connector, *args, **kwargs)`: one job at a time."""

    rtype = "passive"

    def __init__(self, connector: TinyDBConnector, *args: Any, **kwargs: Any) -> None:
        super().__init__(connector, 1, **kwargs)
        self._answered: dict[int, threading.Event] = {}

    def get_available(
        self, username: str | None, rtype: str = "passive", rid_blacklist: Any = None
    ) -> int | None:
        with self._lock:
            if any(JobStatus(j.status).is_live for j in self.jobs.values()):
                return None
        return super().get_available(username, rtype, rid_blacklist)

    def waiting(self) -> list[Job]:
        """Jobs waiting for a person's answer."""
        with self._lock:
            return [j for j in self.jobs.values() if j.status == JobStatus.WAITING]

    def run(self, job: Job, rid: int, exp_config: Any, call_back_func: Callback, **kwargs: Any) -> None:
        jid = self.ensure_jid(job)
        try:
            if not job.script_path or not job.path:
                raise JobError("passive job without a script")
            job.write_config()
        except (JobError, OSError) as exc:
            job.error = str(exc)
            call_back_func(None, jid)
            return
        eid = self.recorded_eid(job)  # the person answering needs the experiment the job is in
        answered = threading.Event()
        with self._lock:
            self._answered[jid] = answered
            job.move_to(JobStatus.WAITING)
        self.connector.update_job(eid, jid, status=JobStatus.WAITING)
        self.bus.publish(
            PassiveResultWanted(
                eid=eid,
                jid=jid,
                command=job.shell_command,
                workingdir=job.path,
                config_path=job.config_path,
                status=JobStatus.WAITING,
            )
        )
        answered.wait()
        with self._lock:
            self._answered.pop(jid, None)
        call_back_func(job.results[-1][0] if job.results else None, jid)

    def submit_result(self, jid: int, text: str) -> float:
        """Answer waiting job `jid` with the pasted output or a bare number; returns its score.

        Raises ResultParseError (the job keeps waiting) when the text holds no result.
        """
        job = self._waiting_job(jid)
        results = parse_pasted_output(text)
        with open(job.log_path(), "a") as log:
            log.write(text if text.endswith("\n") else text + "\n")
        for values in results:
            self.record_result(job, values)
        self._answer(job)
        self.bus.publish(PassiveResultAccepted(eid=self.recorded_eid(job), jid=jid, status=JobStatus.RUNNING))
        return results[-1][0]

    def mark_failed(self, jid: int, reason: str = "marked failed by the user") -> None:
        job = self._waiting_job(jid)
        job.error = reason.strip() or "marked failed by the user"
        job.retryable = False  # the person ran it and saw it fail: asking again would not help
        self._answer(job)

    def kill(self, job: Job) -> None:
        self._answer(job)

    def _waiting_job(self, jid: int) -> Job:
        with self._lock:
            job = self.jobs.get(jid)
        if job is None or job.status != JobStatus.WAITING:
            raise JobError(f"job {jid} is not waiting for a result")
        return job

    def _answer(self, job: Job) -> None:
        if job.jid is None:  # never run here: nobody waits for its answer
            return
        with self._lock:
            event = self._answered.get(job.jid)
            if job.status == JobStatus.WAITING:  # a job stopped before it waited runs on to its end
                job.move_to(JobStatus.RUNNING)
        if event is not None:
            event.set()


__all__ = ["PassiveResourceManager", "ResultParseError"]
