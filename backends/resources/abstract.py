"""The resource-manager contract, with Auptimizer's names and signatures.

`run_job` takes the resource, records the attempt and hands `run` to a worker thread; `run`
does the work and reports through its callback; `finish_job` records the outcome (durably),
frees the resource and tells subscribers. The experiment loop only sees the callback.

Callbacks run one at a time (as Auptimizer's managers run them under a lock) and only after
the job's resource is free again: a callback that picks the next resource (`get_available`)
and starts the next job (`run_job`) is never raced by another job's callback for that resource.
"""

from __future__ import annotations

import logging
import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, Protocol

from ..config import AUPTIMIZER_ARGS, RESOURCE_ARG_KEYS
from ..errors import UnknownArgumentError
from ..events import (
    EventBus,
    JobFailed,
    JobFinished,
    JobIntermediate,
    JobStarted,
    JobStopped,
    ResourceFreed,
    ResourceTaken,
)
from ..jobs import Job
from ..status import ExperimentStatus, JobStatus, advance
from ..store import TinyDBConnector
from .output import OutputPump

log = logging.getLogger(__name__)

Callback = Callable[[Any, int], Any]

#: keyword arguments the engine passes to every manager (one manager may ignore some of them)
ENGINE_KWARGS = frozenset(
    {"eid", "bus", "maximize", "early_stop_policy", "monitor", "pool", "username", "auppath", "key"}
)
#: Auptimizer's own keyword arguments (its Experiment passes the last four to every manager)
AUPTIMIZER_KWARGS = frozenset(AUPTIMIZER_ARGS)


class WaitsForJobs(Protocol):
    """A manager's `executor` as Auptimizer's callers use it: `shutdown(wait=True)` waits for the jobs."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...


class JobsWaiter:
    """`executor` of a manager that runs its jobs without a pool: `shutdown(wait=True)` waits
    until its jobs have ended (and their callbacks have returned); jobs started after that run
    as before."""

    def __init__(self, wait: Callable[[], None]) -> None:
        self._wait = wait

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if wait:
            self._wait()


class AbstractResourceManager(ABC):
    """Base of every manager: `AbstractResourceManager(connector, n_parallel, *args, **kwargs)`."""

    rtype = "abstract"

    def __init__(self, connector: TinyDBConnector, n_parallel: int, *args: Any, **kwargs: Any) -> None:
        """Keyword arguments: the engine's (`eid`, `bus`, `maximize`, `early_stop_policy`, …) and
        Auptimizer's: `early_stop` (a policy as in resource_args), `track_intermediate_results`
        (keep each job's scores in `interm_job_res`), `multi_res_labels`, `save_model` with
        `script`, `workingdir`, `runtime_args` (re-run the best job at the end to save its
        models). A keyword no manager knows is refused (UnknownArgumentError), not dropped."""
        from ..early_stop import make_policy

        self.connector = connector
        self.n_parallel = max(1, int(n_parallel if n_parallel is not None else 1))
        #: the experiment whose jobs this manager records; None until `run_job` registers one
        #: for a manager made without it (`recorded_eid`)
        self.eid: int | None = kwargs.pop("eid", None)
        self._own_experiment = False  # registered by this manager: `finish` records its end
        self.bus: EventBus = kwargs.pop("bus", None) or EventBus()
        self.maximize: bool = bool(kwargs.pop("maximize", True))
        early_stop = kwargs.pop("early_stop", None)
        self.early_stop = kwargs.pop("early_stop_policy", None)
        if self.early_stop is None and early_stop:
            self.early_stop = make_policy(
                early_stop, self.maximize, source=f"the early_stop argument of {type(self).__name__}"
            )
        track = bool(kwargs.pop("track_intermediate_results", False)) or self.early_stop is not None
        #: jid → the scores each job reported, in order (Auptimizer's `interm_job_res`); None when
        #: not tracked
        self.interm_job_res: dict[int, list[float]] | None = {} if track else None
        self.track_intermediate_results = track
        labels = kwargs.pop("multi_res_labels", None)
        self.result_labels: list[str] | None = [str(x) for x in labels] if labels else None
        self._labels_saved: int | None = None  # the eid the labels were recorded for
        self.save_model = kwargs.pop("save_model", False) is True
        self.script: str | None = kwargs.pop("script", None)
        self.workingdir: str | None = kwargs.pop("workingdir", None)
        self.runtime_args: dict[str, Any] = dict(kwargs.pop("runtime_args", None) or {})
        self.one_shot = bool(kwargs.pop("one_shot", False))
        self.jobs: dict[int, Job] = {}
        self.stopping = False  # the experiment is stopping: no retries
        #: why this manager can't go on (a job's end could not be recorded): the experiment fails with it
        self.failure: str | None = None
        self._stop_reasons: dict[int, str] = {}
        self._stop_statuses: dict[int, JobStatus] = {}  # STOPPED or EARLY_STOPPED, beside the reason
        self._ended: set[int] = set()  # jobs whose current attempt has been recorded as ended
        self._lock = threading.Lock()
        self._callback_lock = threading.RLock()  # one callback at a time
        self._pool: ThreadPoolExecutor | None = None
        self._names: dict[int, str] = {}
        unknown = sorted(k for k in kwargs if k not in ENGINE_KWARGS and k not in RESOURCE_ARG_KEYS)
        if unknown:
            raise UnknownArgumentError(
                f"{type(self).__name__} got the unknown argument{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(k) for k in unknown)}: remove {'them' if len(unknown) > 1 else 'it'} "
                "from resource_args in experiment.json (or check the spelling)"
            )
        self.resource_args = kwargs

    # -- seed API -------------------------------------------------------------------------

    def get_available(self, username: str | None, rtype: str, rid_blacklist: Any = None) -> int | None:
        """A random free resource id of `rtype` (not in `rid_blacklist`), or None."""
        rids = self.connector.get_available_resource(rtype, rid_blacklist)
        return random.choice(rids) if rids else None

    def run_job(self, job: Job, rid: int, exp_config: Any, call_back_func: Callback, **kwargs: Any) -> None:
        """Take `rid` and run `job` on it in the background; `call_back_func(score, jid)` at the end,
        once the job's outcome is recorded and `rid` is free again."""
        jid = self.ensure_jid(job)
        advance(JobStatus(job.status), JobStatus.RUNNING)  # a running job is refused before anything is taken
        eid = self.recorded_eid(job)
        if self.result_labels and self._labels_saved != eid:
            self.connector.save_labels(eid, self.result_labels)
            self._labels_saved = eid
        if not self.connector.take_available_resource(rid, jid):  # raising, nothing to undo
            raise RuntimeError(f"resource {rid} is no longer free")
        before = (job.rid, job.attempt, job.status, job.error, job.results, job.prescript_status)
        with self._lock:
            was = (self.jobs.get(jid), self._stop_reasons.get(jid), jid in self._ended)
            was_stop_status = self._stop_statuses.get(jid)
        job.rid = rid
        job.attempt += 1
        job.status, job.error, job.results, job.prescript_status = JobStatus.RUNNING, None, [], None
        with self._lock:
            self.jobs[jid] = job
            self._stop_reasons.pop(jid, None)
            self._stop_statuses.pop(jid, None)
            self._ended.discard(jid)
        try:
            name = self.resource_name(rid)
            self.connector.start_job(eid, jid, job.config, rid, name, job.attempt)
        except BaseException:  # not started (disk full): undo exactly what this call did, then say so
            job.rid, job.attempt, job.status, job.error, job.results, job.prescript_status = before
            with self._lock:
                held, reason, ended = was
                if held is None:
                    self.jobs.pop(jid, None)
                else:
                    self.jobs[jid] = held
                if reason is not None:
                    self._stop_reasons[jid] = reason
                if was_stop_status is not None:
                    self._stop_statuses[jid] = was_stop_status
                if ended:
                    self._ended.add(jid)
            self.connector.free_used_resource(rid)
            raise
        if self.interm_job_res is not None:
            self.interm_job_res.setdefault(jid, [])
        self.bus.publish(ResourceTaken(rid=rid, jid=jid))
        self.bus.publish(
            JobStarted(eid=eid, jid=jid, rid=rid, resource=name, attempt=job.attempt, status=job.status)
        )
        self._launch(job, rid, exp_config, call_back_func, kwargs)

    def recorded_eid(self, job: Job) -> int:
        """The store experiment this manager records its jobs in: the `eid` it was made with, else
        one it registers now, on its first job (Auptimizer's managers run without an experiment),
        so that its jobs show in `aup-tui status` as any other experiment's; `finish` ends it."""
        with self._lock:
            if self.eid is None:
                self.eid = self.connector.start_experiment(
                    None,
                    f"{self.rtype} jobs",
                    {},
                    n_samples=None,
                    target="max" if self.maximize else "min",
                    resource=self.rtype,
                    workingdir=self.workingdir or job.path,
                    script=self.script or job.script,
                    n_parallel=self.n_parallel,
                )
                self._own_experiment = True
            if job.eid is None:
                job.eid = self.eid
            return self.eid

    @abstractmethod
    def run(self, job: Job, rid: int, exp_config: Any, call_back_func: Callback, **kwargs: Any) -> None:
        """Run `job` on `rid` to completion (blocking), then call `call_back_func(score, job.jid)`.

        Implementations set `job.error` when the job failed; results go through `record_result`.
        """

    def finish_job(self, jid: int, score: float | None, status: str | None = None) -> None:
        """Record the job's outcome durably, free its resource and publish what happened.

        Once per attempt: the manager calls it when the job ends, so a caller that also calls
        it (Auptimizer's loop does, in its callback) changes nothing, and never frees a
        resource that another job holds by then."""
        with self._lock:
            job = self.jobs.get(jid)
            if job is None or jid in self._ended:
                if job is None:
                    log.warning("finish_job(%s): no such job in this manager", jid)
                return
            self._ended.add(jid)
        eid = self.recorded_eid(job)  # registered by run_job already
        status = JobStatus(status) if status else JobStatus.FAILED if job.error else JobStatus.FINISHED
        retry = (
            status is JobStatus.FAILED and job.retryable and not self.stopping and job.attempt <= job.retries
        )
        job.move_to(JobStatus.RETRY if retry else status)
        values = list(job.results[-1]) if job.results else None
        try:  # a record that can't be written (damaged shard, EMFILE) must not keep the resource
            end = self.connector.end_job(
                eid, jid, score, status, values=values, error=job.error, final=not retry
            )
        finally:
            if job.rid is not None:
                self.connector.free_used_resource(job.rid)
                self.bus.publish(ResourceFreed(rid=job.rid))
        if status is JobStatus.FINISHED:
            self.bus.publish(
                JobFinished(
                    eid=eid,
                    jid=jid,
                    score=score,
                    values=tuple(values or ()),
                    end=end if isinstance(end, float) else None,
                )
            )
        elif status.is_stopped:
            self.bus.publish(
                JobStopped(eid=eid, jid=jid, reason=job.error or status.lower(), score=score, status=status)
            )
        else:  # a job to be retried stays RUNNING on record
            self.bus.publish(
                JobFailed(
                    eid=eid,
                    jid=jid,
                    error=job.error or "failed",
                    score=score,
                    will_retry=retry,
                    status=JobStatus.RUNNING if retry else status,
                )
            )

    def is_job_stopped(self, jid: int) -> bool:
        return jid in self._stop_reasons or self.connector.is_job_stopped(jid, self.eid)

    def stop_job(
        self, jid: int, reason: str = "stopped by user", status: JobStatus = JobStatus.STOPPED
    ) -> bool:
        """Stop a running job; False when it is not running here. It ends as `status` (STOPPED, or
        EARLY_STOPPED from the early-stopping policy); the first stop's reason and status stay."""
        with self._lock:
            job = self.jobs.get(jid)
            if job is None or not JobStatus(job.status).is_live:
                return False
            if jid not in self._stop_reasons:
                self._stop_reasons[jid] = reason
                self._stop_statuses[jid] = status
        self.kill(job)
        return True

    def kill(self, job: Job) -> None:  # noqa: B027 — a hook: nothing to end unless a manager runs something
        """End the job's work; managers that run something override this."""

    def stop_all(self, reason: str = "experiment stopped") -> None:
        """The experiment is stopping: no retries, no new work, every running job stopped
        (also work of the experiment's end, such as save_model's re-run of the best job)."""
        with self._lock:
            self.stopping = True
        for jid in list(self.jobs):
            self.stop_job(jid, reason=reason)

    def suspend(self) -> None:
        """Stop every running job (Auptimizer's name for it, used on Ctrl-C)."""
        for jid in list(self.jobs):
            self.stop_job(jid, reason="experiment suspended")

    def log_error_message(self, message: str) -> None:
        """Record `message` with the experiment (Auptimizer's name)."""
        if self.eid is not None and self.connector is not None:
            self.connector.log_error(self.eid, str(message))

    @property
    def executor(self) -> WaitsForJobs:
        """The worker threads running jobs (Auptimizer's `executor`: `shutdown(wait=True)` waits for them)."""
        return self._executor()

    def finish(self, status: str = "FINISHED", maximize: bool | None = None) -> list[int | float] | None:
        """Wait for the running jobs to end; returns `[jid, best score]` of the experiment, or None
        (best by `maximize`; None: the constructor's).

        As in Auptimizer, running jobs are waited for, not killed: to stop them first, stop
        them (`stop_job`, `suspend`, or the experiment's `stop`)."""
        self._wait_for_jobs()
        best = self.best_result(maximize)
        self.end_own_experiment(status, best)
        return best

    def end_own_experiment(self, status: str, best: list[int | float] | None) -> None:
        """Record the end (`status`, `best` as `finish` returns it) of the experiment this manager
        registered for itself (`recorded_eid`); nothing for an experiment it was given."""
        with self._lock:
            eid, own = self.eid, self._own_experiment
            self._own_experiment = False
        if own and eid is not None:
            self.connector.end_experiment(
                eid,
                ExperimentStatus(status),
                best_jid=int(best[0]) if best else None,
                best_score=float(best[1]) if best else None,
            )

    def _wait_for_jobs(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def best_result(self, maximize: bool | None = None) -> list[int | float] | None:
        """`[jid, best score]` of this manager's experiment (the highest when `maximize`, else the
        lowest; None: the constructor's `maximize`), or None."""
        if self.eid is None or self.connector is None:
            return None
        best = self.connector.get_best_result(self.eid, self.maximize if maximize is None else bool(maximize))
        return list(best) if best else None

    def ensure_jid(self, job: Job) -> int:
        """Give a job made without one a fresh job id (Auptimizer's jobs start at 0): every job
        has its own files and store record."""
        if job.jid is None:
            job.jid = self.connector.new_jid() if self.connector is not None else 0
        if job.eid is None:
            job.eid = self.eid
        return job.jid

    # -- helpers for managers -------------------------------------------------------------

    def resource_name(self, rid: int) -> str:
        """`type:name` of a resource, as shown in job records (cached: names do not change)."""
        name = self._names.get(rid)
        if name is None:
            doc = self.connector.get_resource(rid)
            name = self._names[rid] = f"{doc['type']}:{doc['name']}" if doc else str(rid)
        return name

    def record_result(self, job: Job, values: tuple[float, ...]) -> None:
        """Keep an intermediate result (store, event) and apply early stopping to it."""
        jid = self.ensure_jid(job)
        index = len(job.results)
        job.results.append(values)
        if job.save_model_flag:  # the best job's re-run: its results are on record already
            return
        if self.interm_job_res is not None:
            self.interm_job_res.setdefault(jid, []).append(values[0])
        eid = self.eid
        if eid is not None:  # a job run outside an experiment (`run` called directly) has no record
            self.connector.save_intermediate_result(eid, jid, index, list(values), job.attempt)
            if self.bus.wants(JobIntermediate):
                self.bus.publish(JobIntermediate(eid=eid, jid=jid, index=index, values=values))
        if self.early_stop is not None and self.early_stop.report(jid, values[0], job.attempt):
            why = self.early_stop.reason(jid)
            self.stop_job(
                jid,
                reason=f"early stopped after {index + 1} results" + (f" — {why}" if why else ""),
                status=JobStatus.EARLY_STOPPED,
            )

    def pump_output(
        self, job: Job, chunks: Iterable[bytes], log: BinaryIO, keep: Callable[[str], bool] | None = None
    ) -> str:
        """Copy a job's output to its log, line by line, publishing lines and recording
        `#Auptimizer:` results (an `OutputPump`); returns the last line seen (for error messages)."""
        pump = OutputPump(self, job, log, keep)
        for chunk in chunks:
            pump.feed(chunk)
        return pump.last

    def _executor(self) -> ThreadPoolExecutor:
        # a pool shut down by a caller (`executor.shutdown(wait=True)`, as Auptimizer's tests do) is replaced
        if self._pool is None or getattr(self._pool, "_shutdown", False):
            self._pool = ThreadPoolExecutor(
                max_workers=self.n_parallel, thread_name_prefix=f"aup-{self.rtype}"
            )
        return self._pool

    def _launch(
        self, job: Job, rid: int, exp_config: Any, call_back_func: Callback, kwargs: dict[str, Any]
    ) -> None:
        """Have a started job run (`run_job` recorded it): by default `run` in a worker thread,
        then `_conclude`. A manager that follows its jobs without a thread each overrides this."""
        self._executor().submit(self._run_and_finish, job, rid, exp_config, call_back_func, kwargs)

    def _run_and_finish(
        self, job: Job, rid: int, exp_config: Any, call_back_func: Callback, kwargs: dict[str, Any]
    ) -> None:
        reported: list[Any] = []

        def callback(score: Any, _jid: int) -> None:
            reported.append(score)

        try:
            self.run(job, rid, exp_config, callback, **kwargs)
        except Exception as exc:  # a manager bug must fail the job, not hang the experiment
            log.exception("job %s crashed in %s", job.jid, type(self).__name__)
            job.error = job.error or f"{type(exc).__name__}: {exc}"
        self._conclude(job, reported[-1] if reported else None, call_back_func)

    def _conclude(self, job: Job, score: Any, call_back_func: Callback) -> None:
        """The job's run is over (`score` as `run` reported it): decide its status, record it,
        free its resource (`finish_job`), then call back."""
        jid = self.ensure_jid(job)  # given by run_job
        reason = self._stop_reasons.get(jid)
        if reason is not None:
            status = self._stop_statuses.get(jid, JobStatus.STOPPED)
            job.error = reason
            if score is None and job.results:
                score = job.results[-1][0]
        elif job.error:
            status = JobStatus.FAILED
        elif score is None:
            status, job.error = JobStatus.FAILED, "the job printed no '#Auptimizer:<score>' line"
        else:
            status = JobStatus.FINISHED
        try:
            self.finish_job(jid, score, status)  # recorded and its resource free before…
        except Exception as exc:  # its end is not on record: fail it, and the experiment (`failure`)
            log.exception("recording the end of job %s failed", jid)
            # not a move: the status finish_job set never reached the record
            job.status, job.error = JobStatus.FAILED, f"its end could not be recorded: {exc}"
            if self.failure is None:
                self.failure = f"the store failed recording the end of job {jid}: {exc}"
        finally:
            with self._callback_lock:  # …the callback, one at a time
                call_back_func(score, jid)
