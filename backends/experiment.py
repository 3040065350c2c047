"""The experiment loop: propose → get_available → run_job → callback, driven by job completions.

Nothing here sleeps on a timer: the loop blocks on a queue that the managers' callbacks fill,
so the next job starts the moment one ends. One small watcher thread reads stop requests and
passive answers that other processes leave in the store.
"""

from __future__ import annotations

import getpass
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from .config import ExperimentConfig, validate_experiment
from .early_stop import make_policy
from .errors import JobError
from .events import EventBus, ExperimentFinished, ExperimentStarted, JobQueued, Notice, StoreProblem
from .jobs import Job
from .proposers import Proposer, get_proposer
from .resources import AbstractResourceManager, get_resource_manager
from .resume import STOPPED_WITH_EXPERIMENT, NotResumable, ResumePlan
from .status import ExperimentStatus, JobStatus, advance
from .store import TinyDBConnector
from .store.files import StoreWriteError

WATCH_INTERVAL = 0.25  # how often stop requests from other processes are looked for


@dataclass
class ExperimentResult:
    eid: int
    status: str  # an ExperimentStatus; "UNKNOWN" for an experiment the store does not have
    best_jid: int | None
    best_score: float | None
    best_config: dict[str, Any] | None
    counts: dict[str, int] = field(default_factory=dict)
    logs: str = ""
    reason: str = ""  # why it FAILED, as recorded with the experiment


class Experiment:
    """Runs one experiment.json on the resources of one `.aup` folder."""

    def __init__(
        self,
        config: ExperimentConfig | dict[str, Any],
        auppath: str = ".aup",
        connector: TinyDBConnector | None = None,
        bus: EventBus | None = None,
        username: str | None = None,
        manager_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """`config`: a loaded experiment.json, or its content as a dict (as Auptimizer takes it),
        checked as the file is. `manager_kwargs` go to the resource manager on top of
        `resource_args` (e.g. a UI's node `monitor`/`pool`, so the SSH manager shares its
        connections and DOWN states)."""
        if isinstance(config, dict):
            config = validate_experiment(config, source="the experiment config")
        self.config = config
        self.manager_kwargs = dict(manager_kwargs or {})
        self.auppath = auppath
        self.connector = connector or TinyDBConnector(auppath)
        self.bus = bus or EventBus()
        self.username = username or getpass.getuser()
        self.eid: int | None = None
        self.resource_manager: AbstractResourceManager | None = None
        self.status = ExperimentStatus.PENDING  # changed only through `_become`
        self._idle = threading.Event()  # set when no job runs and none will be started
        self._mutex = threading.RLock()  # guards the dispatch state below
        self._in_flight: dict[int, Job] = {}
        self._stop = threading.Event()  # a stop was asked for (by a person, or a failure)
        self._loop_over = threading.Event()  # every job is done: none starts any more
        self._over = threading.Event()  # `run` is done with the manager (after save_model's re-run)
        self._stop_status = ExperimentStatus.STOPPED
        self.started = threading.Event()
        self._store_down = False  # told the person that the store can't be written
        self._fail_reason = ""  # why the experiment is FAILED (set by a job failing hard), recorded with it
        self._plan: ResumePlan | None = None  # set by `resume`: continue an ended experiment

    # -- control (any thread) -------------------------------------------------------------

    def stop(self, status: ExperimentStatus = ExperimentStatus.STOPPED) -> None:
        """Stop the experiment: no new jobs, running ones killed; `run` returns soon after.

        Also once the loop is over: the manager may still be running work of the experiment's
        end (save_model's re-run of the best job), which is killed too."""
        with self._mutex:  # no dispatch is half-way: every job that started is in rm.jobs
            if self._stop.is_set():
                return  # the first stop reached the manager; from then on it starts nothing
            self._stop_status = status
            self._stop.set()
            rm = self.resource_manager
            if rm is not None and not self._over.is_set():
                rm.stop_all(reason=STOPPED_WITH_EXPERIMENT[0])
            if not self._in_flight:
                self._idle.set()

    @property
    def stopping(self) -> bool:
        """A stop was asked for. False while save_model's re-run of the best job runs after a
        finished search: the experiment still runs then, and `stop()` ends it."""
        return self._stop.is_set()

    @property
    def recorded_eid(self) -> int:
        """The experiment's id in the store; RuntimeError before `run` recorded it."""
        if self.eid is None:
            raise RuntimeError("the experiment has not started: call run() first")
        return self.eid

    def stop_job(self, jid: int) -> bool:
        rm = self.resource_manager
        return bool(rm and rm.stop_job(jid))

    def _become(self, status: ExperimentStatus) -> None:
        """Move to `status`; IllegalTransition for a move `ExperimentStatus` does not allow."""
        self.status = advance(self.status, status)

    # -- the loop -------------------------------------------------------------------------

    def resume(self, plan: ResumePlan) -> ExperimentResult:
        """Continue experiment `plan.eid` under its own id (see `aup_tui_backends.resume`): the
        plan's proposer hands out the rest, and a proposal with the parameters of one of the
        plan's jobs runs as that job's next attempt. NotResumable when another process took it."""
        advance(plan.status, ExperimentStatus.RUNNING)
        self._plan = plan
        return self.run()

    def run(self) -> ExperimentResult:
        cfg, plan = self.config, self._plan
        self._check_can_run()
        proposer = get_proposer(cfg) if plan is None else plan.proposer
        self.connector.recover()
        if plan is None:
            self.eid = eid = self.connector.start_experiment(
                self.username,
                cfg.name,
                cfg.raw,
                n_samples=proposer.n_samples,
                target=cfg.target,
                resource=cfg.resource,
                workingdir=cfg.workingdir,
                script=cfg.script,
                path=cfg.path,
                n_parallel=cfg.n_parallel,
            )
        elif self.connector.start_experiment_by_eid(plan.eid) is None:
            raise NotResumable(f"experiment {plan.eid} is running in another process now")
        else:
            self.eid = eid = plan.eid
        if cfg.multi_res_labels and plan is None:
            self.connector.save_labels(eid, cfg.multi_res_labels)
        try:
            # as Auptimizer's Experiment: the script, working folder and runtime_args too (save_model)
            args = {
                "script": cfg.script,
                "workingdir": cfg.workingdir,
                "runtime_args": cfg.runtime_args,
                **{k: v for k, v in cfg.resource_args.items() if k != "early_stop"},
                **self.manager_kwargs,
            }
            rm = get_resource_manager(
                cfg.resource,
                self.connector,
                cfg.n_parallel,
                auppath=self.auppath,
                eid=eid,
                bus=self.bus,
                maximize=cfg.maximize,
                early_stop_policy=make_policy(cfg.resource_args.get("early_stop"), cfg.maximize),
                **args,
            )
        except Exception as exc:
            self.connector.log_error(eid, str(exc))
            self.connector.end_experiment(eid, ExperimentStatus.FAILED, reason=str(exc))
            self._become(ExperimentStatus.FAILED)
            raise
        self.resource_manager = rm
        self._become(ExperimentStatus.RUNNING)
        n_free = len(self.connector.get_available_resource(cfg.resource))
        self.bus.publish(
            ExperimentStarted(
                eid=eid,
                name=cfg.name,
                n_samples=proposer.n_samples if plan is None else plan.n_samples,
                target=cfg.target,
                resource=cfg.resource,
            )
        )
        if n_free == 0:
            self._notice(
                f"no free '{cfg.resource}' resource: waiting for one "
                f"(see `aup-tui resources`; `aup-tui resources --free` frees stuck ones)",
                "warning",
            )
        elif n_free < cfg.n_parallel:
            self._notice(
                f"n_parallel is {cfg.n_parallel} but only {n_free} '{cfg.resource}' resources are free: "
                f"running {n_free} at a time",
                "warning",
            )
        gpu_check = None
        if cfg.resource == "gpu":  # NVML may be slow to answer: beside the first jobs, not before them
            gpu_check = threading.Thread(target=self._check_gpus, name="aup-gpu-check", daemon=True)
            gpu_check.start()
        watcher = threading.Thread(target=self._watch_store, name="aup-watch", daemon=True)
        watcher.start()
        self.started.set()
        try:
            status = self._loop(proposer, rm)
        except BaseException as exc:
            self.stop(ExperimentStatus.FAILED)
            try:
                rm.finish(status=ExperimentStatus.FAILED)
            finally:
                self._over.set()
            self.connector.end_experiment(eid, ExperimentStatus.FAILED, reason=f"the engine stopped: {exc!r}")
            self._become(ExperimentStatus.FAILED)
            raise
        finally:
            self._loop_over.set()  # no job starts any more; a stop from now on still reaches the manager
            if gpu_check is not None:
                gpu_check.join(10)  # its warning comes before the end, whatever the jobs' speed
        self._watch_writes()  # the store came back after the last look: say so
        try:
            best = rm.finish(
                maximize=cfg.maximize, status=status
            )  # a FINISHED run with save_model re-runs its best job here
        except Exception as exc:  # the store can't be read (a damaged file): record why, end as FAILED
            best = None
            if status != ExperimentStatus.FAILED or not self._fail_reason:
                status, self._fail_reason = ExperimentStatus.FAILED, f"the run could not finish: {exc}"
            self._notice(self._fail_reason, "error")
        finally:
            with self._mutex:
                self._over.set()  # the watcher ends; stop() has nothing left to kill
        best_jid, best_score = (int(best[0]), float(best[1])) if best else (None, None)
        why = {"reason": self._fail_reason} if status == ExperimentStatus.FAILED else {}
        try:  # finished jobs' records waiting for room are written first (see _wait_for_store)
            self.connector.end_experiment(eid, status, best_jid=best_jid, best_score=best_score, **why)
        except StoreWriteError as exc:  # stopped while the store is full: say what was not written
            self._notice(
                f"{exc}; {self.connector.pending_records} finished jobs' records were not written "
                f"(their output is in {os.path.join(self.config.workingdir, 'jobs')})",
                "error",
            )
        self._become(status)
        self.bus.publish(
            ExperimentFinished(
                eid=eid, status=status, best_jid=best_jid, best_score=best_score, reason=why.get("reason", "")
            )
        )
        try:
            result = self.result()
        except Exception:  # noqa: BLE001 — a damaged store file: what this run knows
            result = ExperimentResult(
                eid=eid,
                status=status,
                best_jid=best_jid,
                best_score=best_score,
                best_config=None,
                logs=os.path.join(cfg.workingdir, "jobs"),
                reason=why.get("reason", ""),
            )
        result.status = status  # also when the store could not take it (stopped on a full disk)
        return result

    def _check_can_run(self) -> None:
        """Refuse, before anything is recorded or started, an experiment that could never run a
        job: n_parallel below 1 or no registered resource of its type would wait forever (the
        CLI checks this too; library users get the same one-line ConfigError)."""
        from .errors import ConfigError
        from .setup import require_resources, sync_resources

        cfg = self.config
        n = cfg.n_parallel
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(
                f"n_parallel in {os.path.basename(cfg.path) if cfg.path else 'the experiment config'} "
                f"must be a whole number of at least 1, got {n!r}"
            )
        if not self.connector.resources(cfg.resource) and os.path.isfile(
            os.path.join(self.auppath, "env.ini")
        ):
            from .env_ini import load_env

            sync_resources(load_env(self.auppath), self.connector)  # an env.ini written by hand, never synced
        require_resources(cfg.resource, self.auppath, self.connector)

    def _check_gpus(self) -> None:
        """Warn once when NVML does not see every card gpu_mapping names (or cannot be used)."""
        from .setup import gpu_mapping_warning

        try:
            warning = gpu_mapping_warning([r["name"] for r in self.connector.resources("gpu")])
        except Exception as exc:  # noqa: BLE001 — the check must never break the run
            warning = f"NVML: the GPU check failed ({exc})"
        if warning:
            self._notice(warning, "warning")

    def _loop(self, proposer: Proposer, rm: AbstractResourceManager) -> ExperimentStatus:
        """Dispatch until every job is done. Completions dispatch the next job right in the
        worker thread that finished (no hand-off to this thread); this thread only waits, and
        looks again now and then when every resource was busy elsewhere."""
        self._proposer, self._rm = proposer, rm
        self._retry: list[Job] = []
        self._blacklist: dict[int, set[int]] = {}
        self._all_rids = {r["rid"] for r in self.connector.resources(self.config.resource)}
        self._fail_reason = ""
        self._finished = 0 if self._plan is None else self._plan.finished  # a resumed run's count on
        self._exhausted = False
        with self._mutex:
            self._dispatch()
        while not self._idle.wait(WATCH_INTERVAL):
            self._check_failures()
            with self._mutex:
                if not self._in_flight:
                    self._dispatch()  # resources held by another process may be free now
        self._wait_for_store()
        if self._stop.is_set() and self._stop_status == ExperimentStatus.STOPPED:
            return ExperimentStatus.STOPPED
        if self._fail_reason or self._finished == 0:
            if not self._fail_reason:
                failed = sum(1 for j in rm.jobs.values() if j.status == JobStatus.FAILED)
                self._fail_reason = (
                    f"no job finished with a score ({failed} failed; see their logs in "
                    f"{os.path.join(self.config.workingdir, 'jobs')})"
                )
            return ExperimentStatus.FAILED
        return ExperimentStatus.FINISHED

    def _wait_for_store(self) -> None:
        """Every job is done: wait (stoppable) until records that wait for room are written —
        not when the store fails otherwise (`_check_failures` stops the run then)."""
        while self.connector.write_error is not None and not self._stop.wait(WATCH_INTERVAL):
            self._check_failures()

    def _check_failures(self) -> None:
        """Fail the run, rather than wait for ever, when it can't go on: a job's end could not
        be recorded (its manager's `failure`), or the store can't be written and the flusher
        that would write it again fails with something other than a full disk."""
        why = getattr(self._rm, "failure", None)
        failure = self.connector.flush_failure
        if not why and failure is not None and self.connector.write_error is not None:
            why = f"the store can't be written: {failure}"
        if why and not self._stop.is_set():
            with self._mutex:
                if not self._fail_reason:
                    self._fail_reason = why
            self._notice(why, "error")
            self.stop(ExperimentStatus.FAILED)

    def _dispatch(self) -> None:
        """Start jobs while there is room (caller holds `_mutex`); signal when all are done.
        No job starts while the store can't be written (disk full): the watcher resumes."""
        cfg, rm = self.config, self._rm
        while (
            not self._stop.is_set()
            and not self._loop_over.is_set()
            and len(self._in_flight) < cfg.n_parallel
            and self.connector.write_error is None
        ):
            job = self._retry.pop(0) if self._retry else None
            if job is None and not self._exhausted:
                params = self._proposer.get()
                if params is None:  # spent, or waiting for running jobs' scores (hyperband rungs):
                    self._exhausted = self._proposer.finished or not self._in_flight  # then asked again
                else:
                    job = self._new_job(params)
            if job is None:
                break
            jid = rm.ensure_jid(job)  # given by _new_job: this only names it as an int
            banned = self._blacklist.get(jid, set())
            rid = rm.get_available(
                self.username, cfg.resource, rid_blacklist=banned if banned < self._all_rids else None
            )
            if rid is None:
                self._retry.insert(0, job)
                break
            self._in_flight[jid] = job
            try:
                rm.run_job(job, rid, cfg, self._job_done)
            except (RuntimeError, StoreWriteError):  # taken by another process meanwhile, or the
                self._in_flight.pop(jid)  # disk filled up (run_job undid its part): wait, retry
                self._retry.insert(0, job)
                break
        if not self._in_flight and (self._stop.is_set() or (self._exhausted and not self._retry)):
            self._idle.set()

    def _job_done(self, score: Any, jid: int) -> None:
        """The managers' callback (a worker thread): account for the job, start the next."""
        with self._mutex:
            job = self._in_flight.pop(jid, None)
            if job is not None:
                self._account(job)
            self._dispatch()

    def _account(self, job: Job) -> None:
        cfg = self.config
        if job.status == JobStatus.RETRY:
            if job.jid is not None and job.rid is not None:  # its next attempt runs elsewhere if it can
                self._blacklist.setdefault(job.jid, set()).add(job.rid)
            self._retry.append(job)
        elif job.status == JobStatus.FINISHED:
            self._finished += 1
            self._proposer.update(job.results[-1][0] if job.results else None, job.config)
        elif job.status == JobStatus.FAILED:
            self._proposer.failed(job.config)
            if self._rm.failure:  # the store failed, not the job: no point going on
                self._fail_reason = self._fail_reason or self._rm.failure
                self._notice(self._rm.failure, "error")
                self.stop(ExperimentStatus.FAILED)
            elif not cfg.job_failure.get("ignore_fail"):
                why = (
                    f"job {job.jid} failed: {job.error} — stopping the experiment "
                    "(set job_failure.ignore_fail to keep going)"
                )
                if not self._fail_reason:  # the first failure is the reason; later ones follow from it
                    self._fail_reason = why
                self._notice(why, "error")
                self.stop(ExperimentStatus.FAILED)
        else:  # stopped (early or by hand): no score, but a proposer waiting on its rung must hear of it
            self._proposer.failed(job.config)
        if self._rm.early_stop is not None and job.status != JobStatus.RETRY:
            self._rm.early_stop.forget(job.jid)

    def _new_job(self, params: dict[str, Any]) -> Job:
        """A job for `params`: the next attempt of a resumed experiment's job with these
        parameters (one that failed, was stopped or interrupted), else a new job."""
        cfg = self.config
        retries = int(cfg.job_failure.get("job_retries", 0))
        earlier = self._plan.take_job(params) if self._plan is not None else None
        if earlier is not None:
            attempts = len(earlier.get("attempts") or ())
            job = Job(
                cfg.script,
                params,
                path=cfg.workingdir,
                retries=attempts + retries,
                attempt=attempts,
                status=JobStatus(earlier["status"]),  # as it ended: run_job moves it to its next attempt
            )
            job.jid = jid = int(earlier["jid"])
        else:
            job = Job(cfg.script, params, path=cfg.workingdir, retries=retries)
            job.jid = jid = self.connector.new_jid()
        job.eid = eid = self.recorded_eid
        self.bus.publish(JobQueued(eid=eid, jid=jid, config=params))
        return job

    def _notice(self, message: str, level: str = "info") -> None:
        if level != "info":
            try:
                self.connector.log_error(self.recorded_eid, message)
            except Exception:  # noqa: BLE001 — a store that can't be written: the person still sees it
                pass
        self.bus.publish(Notice(message=message, eid=self.eid, level=level))

    def _watch_store(self) -> None:
        """Honour stop requests and passive answers written by other processes."""
        seen: set[tuple[Any, Any]] = set()
        eid = self.recorded_eid
        while not self._over.wait(WATCH_INTERVAL):
            self._watch_writes()
            try:
                for req in self.connector.stop_requests(eid):
                    key = (req["jid"], req["time"])
                    if key in seen:
                        continue
                    seen.add(key)
                    if req["jid"] is None:
                        self.stop()
                    else:
                        self.stop_job(req["jid"])
                rm = self.resource_manager
                if hasattr(rm, "submit_result"):
                    for answer in self.connector.take_passive_answers(eid):
                        self._answer_passive(rm, answer)
            except Exception as exc:  # a broken store read must not kill the watcher
                self.bus.publish(Notice(message=f"store watcher: {exc}", eid=self.eid, level="warning"))

    def _watch_writes(self) -> None:
        """Say once that the store can't be written, and once that it can again (then dispatch)."""
        with self._mutex:
            error, was_down = self.connector.write_error, self._store_down
            self._store_down = error is not None
        if error is not None and not was_down:
            n = self.connector.pending_records
            self.bus.publish(
                StoreProblem(
                    message=f"store can't be written: {error.strerror} on {error.path}; {n} results waiting — "
                    "free space (no job starts until then; nothing is lost)",
                    eid=self.eid,
                    level="error",
                    path=error.path,
                    pending=n,
                )
            )
        elif error is None and was_down:
            self.bus.publish(
                StoreProblem(
                    message="store can be written again: results saved, carrying on",
                    eid=self.eid,
                    level="info",
                    ok=True,
                )
            )
            if not self._stop.is_set() and not self._loop_over.is_set():
                with self._mutex:
                    self._dispatch()

    def _answer_passive(self, rm: Any, answer: dict[str, Any]) -> None:
        """Hand a passive answer another process left in the store to `rm` (a manager that takes
        passive answers)."""
        try:
            if answer.get("failed"):
                rm.mark_failed(answer["jid"], answer["text"])
            else:
                rm.submit_result(answer["jid"], answer["text"])
        except JobError as exc:
            self._notice(f"answer for job {answer['jid']} rejected: {exc}", "warning")

    # -- reporting ------------------------------------------------------------------------

    def result(self) -> ExperimentResult:
        return summarize(self.connector, self.recorded_eid)


def summarize(connector: TinyDBConnector, eid: int) -> ExperimentResult:
    """Status, counts and best job of experiment `eid`, read from the store."""
    exp = connector.get_experiment(eid) or {}
    jobs = connector.job_rows(eid)
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j["status"]] = counts.get(j["status"], 0) + 1
    best = connector.get_best_result(eid, exp.get("target", "max") == "max", jobs=jobs)
    best_cfg = None
    if best:
        best_cfg = next((j["config"] for j in jobs if j["jid"] == best[0]), None)
    workingdir = exp.get("workingdir") or "."
    status = exp.get("status", "UNKNOWN")
    return ExperimentResult(
        eid=eid,
        status=status,
        best_jid=best[0] if best else None,
        best_score=best[1] if best else None,
        best_config=best_cfg,
        counts=counts,
        logs=os.path.join(workingdir, "jobs"),
        reason=(exp.get("reason") or "") if status == ExperimentStatus.FAILED else "",
    )
