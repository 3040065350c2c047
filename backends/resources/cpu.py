"""Jobs on this machine's CPUs: `n_parallel` at once, each a process group of its own with its
own environment (none of them sees a GPU), its output followed live into its log."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

from ..errors import AupError
from ..events import Notice
from ..jobs import Job, env_strings
from ..remote import LOCAL_WRAPPER
from ..status import ExperimentStatus
from ..store import TinyDBConnector
from .abstract import AbstractResourceManager, Callback, JobsWaiter
from .output import OutputPump
from .processes import (
    KILL_GRACE,
    _describe_exit,
    _os_error_text,
    _signal_group,
    _start_error,
    start_process,
)
from .reactor import ProcessReactor

logger = logging.getLogger(__name__)


class CPUResourceManager(AbstractResourceManager):
    """`CPUResourceManager(connector, n_parallel, ...)`: each job a local process (group) with
    CUDA_VISIBLE_DEVICES="". The local-process manager of the seed's tree: the GPU manager is
    one with another environment; the SSH manager one that runs its jobs elsewhere."""

    rtype = "cpu"

    def __init__(self, connector: TinyDBConnector, n_parallel: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(connector, n_parallel, *args, **kwargs)
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._reactor = ProcessReactor(self.rtype)  # follows every running job from one thread
        self._rerun: Job | None = None  # save_model's re-run of the best job, while it runs
        #: our environment, encoded once: copying and encoding os.environ for every job cost
        #: more than a third of the dispatch overhead
        self._base_env = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}

    def job_env(self, rid: int) -> dict[str, str]:
        """Variables this resource sets for its job (never written into our own os.environ)."""
        return {"CUDA_VISIBLE_DEVICES": ""}

    def job_pids(self) -> dict[int, int]:
        """jid → pid of each job running now: its process-group leader (jobs run in their own session)."""
        with self._lock:
            return {jid: proc.pid for jid, proc in self._procs.items()}

    def run(self, job: Job, rid: int, exp_config: Any, call_back_func: Callback, **kwargs: Any) -> None:
        """Run `job` to its end (blocking), then `call_back_func(score, jid)`; the score is None
        when it failed (`job.error` says why). Called directly (not through `run_job`) it runs
        the job all the same, without taking `rid` or recording the job."""
        if threading.current_thread() is self._reactor.thread:
            raise RuntimeError("run() blocks until the job ends: call run_job() from a job's callback")
        ended = threading.Event()
        scores: list[float | None] = []

        def done(score: float | None) -> None:
            scores.append(score)
            ended.set()

        self._start(job, rid, exp_config, kwargs, done)
        ended.wait()
        call_back_func(scores[0], self.ensure_jid(job))

    def _launch(
        self, job: Job, rid: int, exp_config: Any, call_back_func: Callback, kwargs: dict[str, Any]
    ) -> None:
        """Start the job here and now (no worker thread); the reactor's thread ends it and
        calls back, and the callback starts the next job on that same thread. A subclass that
        overrides `run` (as Auptimizer's users do) has it called in a worker thread as before."""
        if type(self).run is not CPUResourceManager.run:
            super()._launch(job, rid, exp_config, call_back_func, kwargs)
            return

        def done(score: float | None) -> None:
            self._conclude(job, score, call_back_func)

        try:
            self._start(job, rid, exp_config, kwargs, done)
        except Exception as exc:  # a manager bug must fail the job, not hang the experiment
            logger.exception("job %s crashed in %s", job.jid, type(self).__name__)
            job.error = job.error or f"{type(exc).__name__}: {exc}"
            self._reactor.defer(lambda: done(None))

    def _start(
        self,
        job: Job,
        rid: int,
        exp_config: Any,
        kwargs: dict[str, Any],
        done: Callable[[float | None], None],
    ) -> None:
        """Start the job's process and have the reactor follow it; `done(score)` on the
        reactor's thread once it has ended (also when it could not start: `job.error` says why)."""
        jid = self.ensure_jid(job)
        job.error, job.results, job.prescript_status = None, [], None
        runtime = dict(getattr(exp_config, "runtime_args", None) or {})
        runtime.update(kwargs)
        try:
            extra = {**env_strings(runtime.get("env")), **self.job_env(rid), "AUP_JOB_ID": str(jid)}
            job.verify_local()
            job.write_config()
            log = open(job.log_path(), "wb", buffering=0)  # noqa: SIM115 -- unbuffered: followed live
        except AupError as exc:  # before OSError: a JobError is an EnvironmentError too
            job.error = str(exc)
            self._reactor.defer(lambda: done(None))
            return
        except OSError as exc:
            job.error = _os_error_text(exc, job.log_path())
            self._reactor.defer(lambda: done(None))
            return
        env = dict(self._base_env)
        env.update((os.fsencode(k), os.fsencode(v)) for k, v in extra.items())
        argv = self._argv(job, runtime)
        try:
            proc = start_process(argv, job.path, env)
        except OSError as exc:
            log.close()
            job.error = _start_error(job, argv, exc)
            self._reactor.defer(lambda: done(None))
            return
        with self._lock:
            self._procs[jid] = proc
        try:
            if self.eid is not None and jid in self.jobs and not job.save_model_flag:
                self.connector.set_job_pid(self.eid, jid, job.attempt, proc.pid)
        except Exception:  # only monitors in other processes need it: never fail the job for it
            logger.warning("could not record the pid of job %s", jid, exc_info=True)
        pump = OutputPump(self, job, log)

        def ended(crash: BaseException | None) -> None:
            self._reap(job, proc, log, pump, crash)
            done(job.results[-1][0] if job.results else None)

        try:
            self._reactor.follow(proc, pump.feed, ended)
        except BaseException:  # not followed (out of descriptors): no job left running unseen
            self._kill_and_reap(jid, proc, log)
            raise
        if jid in self._stop_reasons:  # stopped between dispatch and start
            self.kill(job)

    def _reap(
        self,
        job: Job,
        proc: subprocess.Popen[bytes],
        log: BinaryIO,
        pump: OutputPump,
        crash: BaseException | None,
    ) -> None:
        """The job's script has exited (or following it failed: `crash`): kill what it left in
        its group, reap it, and say in `job.error` why it failed, if it did."""
        jid = self.ensure_jid(job)
        code = self._kill_and_reap(jid, proc, log)
        if crash is not None:
            logger.error("following job %s failed", jid, exc_info=crash)
            job.error = job.error or f"{type(crash).__name__}: {crash}"
        elif jid not in self._stop_reasons and not job.error:
            if job.prescript_status is not None:
                job.error = (
                    f"prescript exited with status {job.prescript_status}; "
                    f"{os.path.basename(job.script_path)} did not run; see {job.log_path()}"
                )
            elif code != 0:
                tail = f" (last output: {pump.last!r})" if pump.last else ""
                job.error = (
                    f"{os.path.basename(job.script_path)} {_describe_exit(code)}{tail}; see {job.log_path()}"
                )

    def _kill_and_reap(self, jid: int, proc: subprocess.Popen[bytes], log: BinaryIO) -> int:
        """Kill what is left in the job's group, reap the job's process (its exit status) and
        close its pipe and log. The group is killed while the zombie still holds the group id
        (it cannot be reused yet), and under the lock, so that a late SIGKILL from kill() never
        reaches a recycled group id."""
        try:
            with self._lock:
                _signal_group(proc.pid, signal.SIGKILL)
                code = proc.wait()
                self._procs.pop(jid, None)
        finally:
            assert proc.stdout is not None
            proc.stdout.close()
            log.close()
        return code

    @property
    def executor(self) -> JobsWaiter:
        """What Auptimizer's callers wait on for the running jobs (`shutdown(wait=True)`)."""
        return JobsWaiter(self._wait_for_jobs)

    def _wait_for_jobs(self) -> None:
        super()._wait_for_jobs()  # a subclass's own `run`s, in worker threads
        self._reactor.wait_idle()

    def _argv(self, job: Job, runtime: dict[str, Any]) -> list[str]:
        pre, post = runtime.get("prescript"), runtime.get("postscript")
        if not pre and not post:
            return job.command
        return ["/bin/sh", "-c", LOCAL_WRAPPER, "aup-job", str(pre or ""), str(post or ""), *job.command]

    def kill(self, job: Job) -> None:
        """SIGTERM the job's whole process group, SIGKILL it after a short grace."""
        jid = job.jid
        with self._lock:
            proc = self._procs.get(jid) if jid is not None else None
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        timer = threading.Timer(KILL_GRACE, self._kill_now, (jid, proc))
        timer.daemon = True
        timer.start()

    def _kill_now(self, jid: int, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            if self._procs.get(jid) is proc:  # not reaped yet: its group id is still its own
                _signal_group(proc.pid, signal.SIGKILL)

    def finish(  # type: ignore[override]  # Auptimizer's callers pass both by name; maximize first here
        self, maximize: bool = True, status: str = "FINISHED"
    ) -> list[int | float] | None:
        """Wait for the running jobs (as Auptimizer does; stop them first to end them sooner);
        returns `[jid, best score]` or None — the highest score when `maximize`, else the
        lowest (the engine passes its experiment's target). With `save_model`, a FINISHED experiment's
        best job then runs once more to save its models (`save_best_model`), unless the experiment is stopping (`stop_all`)."""
        self._wait_for_jobs()
        best = self.best_result(bool(maximize))
        if self.save_model and best is not None and status == ExperimentStatus.FINISHED and not self.stopping:
            self.save_best_model(best)
        self.end_own_experiment(status, best)
        return best

    def stop_all(self, reason: str = "experiment stopped") -> None:
        """Also ends save_model's re-run of the best job (not one of `jobs`: it is not recorded)."""
        super().stop_all(reason)
        with self._lock:
            rerun = self._rerun
            if rerun is not None and rerun.jid is not None:
                self._stop_reasons.setdefault(rerun.jid, reason)
        if rerun is not None:
            self.kill(rerun)

    # -- save_model ------------------------------------------------------------------------

    def save_best_model(self, best: list[int | float]) -> Job | None:
        """Auptimizer's `save_model`: run the best job's config once more with `save_model: true`
        and `folder_name: models_<eid>` added, so that the script (Auptimizer's `aup_save_model`)
        writes its models to `aup_models/models_<eid>` in its working folder; its config and log
        are `jobs/best_job_<eid>.json` and `.out`. Then `collect_models` brings the models here.

        Returns the job run (its `error` set when it failed), or None when it could not run."""
        eid, jid = self.eid, int(best[0])
        if eid is None:  # no experiment, no best job on record (`best_result` is None then)
            return None
        record = self.connector.get_job(jid, eid) or {}
        exp = self.connector.get_experiment(eid) or {}
        script = self.script or exp.get("script")
        workingdir = self.workingdir or exp.get("workingdir") or "."
        if not script or record.get("config") is None:
            self._model_notice(
                f"cannot save the best job's models: job {jid} or the experiment's script is not on record",
                "error",
            )
            return None
        config = {k: v for k, v in record["config"].items() if k != "job_id"}
        job = Job(script, {**config, "save_model": True, "folder_name": f"models_{eid}"}, path=workingdir)
        job.jid, job.eid = jid, eid
        rid = self._take_any(jid)
        if rid is None:
            self._model_notice(
                f"cannot save the best job's models: no free '{self.rtype}' resource to re-run job {jid} on",
                "error",
            )
            return None
        done = threading.Event()
        with self._lock:  # `stop_all` either sees it (and kills it) or has set `stopping` before
            if self.stopping:
                self.connector.free_used_resource(rid)
                return None
            self._rerun = job
            self._stop_reasons.pop(jid, None)
        try:
            self.run(job, rid, None, lambda score, _jid: done.set(), **self.runtime_args)
            stopped = self._stop_reasons.get(jid)
            if stopped is not None:
                job.error = job.error or f"stopped ({stopped})"
            if not job.error:
                self.collect_models(job, rid)
        except Exception as exc:  # a manager bug must not lose the experiment's result
            logger.exception("re-running the best job %s failed", jid)
            job.error = job.error or f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._rerun = None
            self.connector.free_used_resource(rid)
        if job.error or not job.results:
            why = job.error or "it printed no '#Auptimizer:' line"
            self._model_notice(
                f"the best job {jid} re-run to save its models failed: {why}; see {job.log_path()}", "error"
            )
        else:
            self._model_notice(f"the best job {jid} saved its models in {self.models_dir(job)}", "info")
        return job

    def models_dir(self, job: Job) -> str:
        """Where the best job's models are on this machine: `aup_models/models_<eid>` in its working folder."""
        return os.path.join(job.path, "aup_models", f"models_{job.eid}")

    def collect_models(self, job: Job, rid: int) -> None:
        """Bring the best job's models to `models_dir(job)`. Local jobs wrote them there already;
        a manager that runs jobs elsewhere (SSH, AWS) downloads them here."""

    def _take_any(self, jid: int) -> int | None:
        for rid in self.connector.get_available_resource(self.rtype):
            if self.connector.take_available_resource(rid, jid):
                return rid
        return None

    def _model_notice(self, message: str, level: str) -> None:
        (logger.error if level == "error" else logger.info)("%s", message)
        if level == "error":
            self.log_error_message(message)
        self.bus.publish(Notice(message=message, eid=self.eid, level=level))
