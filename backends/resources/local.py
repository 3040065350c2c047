"""Running a job as a local subprocess: its own process group, its own environment, its log."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from typing import Any

from ..jobs import Job, JobError
from .abstract import MAX_LINE, AbstractResourceManager, Callback

log = logging.getLogger(__name__)

KILL_GRACE = 0.5  # seconds between SIGTERM and SIGKILL to the job's process group


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class LocalProcessManager(AbstractResourceManager):
    """Common body of the CPU and GPU managers: they differ only in each job's environment."""

    def __init__(self, connector, n_parallel: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(connector, n_parallel, *args, **kwargs)
        self._procs: dict[int, subprocess.Popen] = {}
        #: our environment, encoded once: copying and encoding os.environ for every job cost
        #: more than a third of the dispatch overhead
        self._base_env = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}

    def job_env(self, rid: int) -> dict[str, str]:
        """Variables this resource sets for its job (never written into our own os.environ)."""
        return {}

    def job_pids(self) -> dict[int, int]:
        """jid → pid of each job running now: its process-group leader (jobs run in their own session)."""
        with self._lock:
            return {jid: proc.pid for jid, proc in self._procs.items()}

    def run(self, job: Job, rid: int, exp_config: Any, call_back_func: Callback, **kwargs: Any) -> None:
        runtime = dict(getattr(exp_config, "runtime_args", None) or {})
        runtime.update(kwargs)
        extra = {**(runtime.get("env") or {}), **self.job_env(rid), "AUP_JOB_ID": job.jid}
        env = dict(self._base_env)
        env.update((os.fsencode(str(k)), os.fsencode(str(v))) for k, v in extra.items())
        try:
            job.verify_local()
            job.write_config()
        except (JobError, OSError) as exc:
            job.error = str(exc)
            call_back_func(None, job.jid)
            return
        argv = self._argv(job, runtime)
        with open(job.log_path(), "wb", buffering=0) as log:  # unbuffered: the log is followed live
            try:
                proc = subprocess.Popen(
                    argv, cwd=job.path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                )
            except OSError as exc:
                job.error = f"could not start {job.script_path}: {exc.strerror or exc}"
                call_back_func(None, job.jid)
                return
            with self._lock:
                self._procs[job.jid] = proc
            try:
                self.connector.set_job_pid(self.eid, job.jid, job.attempt, proc.pid)
            except Exception:  # only monitors in other processes need it: never fail the job for it
                log.warning("could not record the pid of job %s", job.jid, exc_info=True)
            if job.jid in self._stop_reasons:  # stopped between dispatch and start
                self.kill(job)
            try:
                assert proc.stdout is not None
                last_line = self.pump_output(job, iter(lambda: proc.stdout.readline(MAX_LINE), b""), log)
                code = proc.wait()
            finally:
                with self._lock:
                    self._procs.pop(job.jid, None)
        if code != 0 and job.jid not in self._stop_reasons and not job.error:
            tail = f" (last output: {last_line!r})" if last_line else ""
            job.error = f"{os.path.basename(job.script_path)} {_describe_exit(code)}{tail}; see {job.log_path()}"
        call_back_func(job.results[-1][0] if job.results else None, job.jid)

    def _argv(self, job: Job, runtime: dict) -> list[str]:
        pre, post = runtime.get("prescript"), runtime.get("postscript")
        if not pre and not post:
            return job.command
        import shlex

        body = " ".join(shlex.quote(a) for a in job.command)
        script = f"{pre or ':'}\n{body}\nrc=$?\n{post or ':'}\nexit $rc\n"
        return ["/bin/sh", "-c", script]

    def kill(self, job: Job) -> None:
        """SIGTERM the job's whole process group, SIGKILL it after a short grace."""
        with self._lock:
            proc = self._procs.get(job.jid)
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        timer = threading.Timer(KILL_GRACE, _signal_group, (proc.pid, signal.SIGKILL))
        timer.daemon = True
        timer.start()

    def finish(self, status: str = "FINISHED") -> list | None:
        with self._lock:
            running = list(self._procs.values())
        for proc in running:
            _signal_group(proc.pid, signal.SIGKILL)
        return super().finish(status)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
