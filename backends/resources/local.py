"""Running a job as a local subprocess: its own process group, its own environment, its log."""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

from ..errors import AupError
from ..jobs import Job, env_strings
from ..remote import LOCAL_WRAPPER
from .abstract import MAX_LINE, AbstractResourceManager, Callback

logger = logging.getLogger(__name__)

KILL_GRACE = 0.5  # seconds between SIGTERM and SIGKILL to the job's process group
DRAIN_LIMIT = 2.0  # seconds to read what a job's leftover children keep writing after it exited


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
        try:
            extra = {**env_strings(runtime.get("env")), **self.job_env(rid), "AUP_JOB_ID": str(job.jid)}
            job.verify_local()
            job.write_config()
            log = open(job.log_path(), "wb", buffering=0)  # unbuffered: the log is followed live
        except (AupError, OSError) as exc:
            job.error = _os_error_text(exc, job.log_path()) if isinstance(exc, OSError) else str(exc)
            call_back_func(None, job.jid)
            return
        env = dict(self._base_env)
        env.update((os.fsencode(k), os.fsencode(v)) for k, v in extra.items())
        argv = self._argv(job, runtime)
        with log:
            try:
                proc = subprocess.Popen(
                    argv, cwd=job.path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                )
            except OSError as exc:
                job.error = _start_error(job, argv, exc)
                call_back_func(None, job.jid)
                return
            with self._lock:
                self._procs[job.jid] = proc
            try:
                self.connector.set_job_pid(self.eid, job.jid, job.attempt, proc.pid)
            except Exception:  # only monitors in other processes need it: never fail the job for it
                logger.warning("could not record the pid of job %s", job.jid, exc_info=True)
            if job.jid in self._stop_reasons:  # stopped between dispatch and start
                self.kill(job)
            try:
                last_line = self.pump_output(job, _output_until_exit(proc), log)
                _wait_exited(proc)
            finally:
                # what the script left in its group is killed while its zombie still holds the
                # group id (it cannot be reused yet); then it is reaped — under the lock, so a
                # late SIGKILL from kill() never reaches a recycled group id
                with self._lock:
                    _signal_group(proc.pid, signal.SIGKILL)
                    code = proc.wait()
                    self._procs.pop(job.jid, None)
                assert proc.stdout is not None
                proc.stdout.close()
        if job.jid not in self._stop_reasons and not job.error:
            if job.prescript_status is not None:
                job.error = f"prescript exited with status {job.prescript_status}; " \
                            f"{os.path.basename(job.script_path)} did not run; see {job.log_path()}"
            elif code != 0:
                tail = f" (last output: {last_line!r})" if last_line else ""
                job.error = f"{os.path.basename(job.script_path)} {_describe_exit(code)}{tail}; see {job.log_path()}"
        call_back_func(job.results[-1][0] if job.results else None, job.jid)

    def _argv(self, job: Job, runtime: dict) -> list[str]:
        pre, post = runtime.get("prescript"), runtime.get("postscript")
        if not pre and not post:
            return job.command
        return ["/bin/sh", "-c", LOCAL_WRAPPER, "aup-job", str(pre or ""), str(post or ""), *job.command]

    def kill(self, job: Job) -> None:
        """SIGTERM the job's whole process group, SIGKILL it after a short grace."""
        with self._lock:
            proc = self._procs.get(job.jid)
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        timer = threading.Timer(KILL_GRACE, self._kill_now, (job.jid, proc))
        timer.daemon = True
        timer.start()

    def _kill_now(self, jid: int, proc: subprocess.Popen) -> None:
        with self._lock:
            if self._procs.get(jid) is proc:  # not reaped yet: its group id is still its own
                _signal_group(proc.pid, signal.SIGKILL)

    def finish(self, status: str = "FINISHED") -> list | None:
        with self._lock:
            for proc in self._procs.values():
                _signal_group(proc.pid, signal.SIGKILL)
        return super().finish(status)


def _start_error(job: Job, argv: list[str], exc: OSError) -> str:
    """Why the job could not start, in words: a missing interpreter reads as such, not as a
    missing script (exec gives ENOENT for both)."""
    script = job.script_path
    if isinstance(exc, FileNotFoundError) and argv[0] == script and os.path.isfile(script):
        try:
            with open(script, "rb") as f:
                first = f.readline(200)
        except OSError:
            first = b""
        if first.startswith(b"#!"):
            interp = first[2:].decode("utf-8", "replace").strip()
            return f"could not start {script}: its interpreter {interp!r} (from the #! line) was not found"
    if getattr(exc, "errno", None) == errno.ENOEXEC:
        return f"could not start {script}: it is not a program: start it with a #! line (e.g. #!/bin/sh)"
    return f"could not start {script}: {exc.strerror or exc}"


def _os_error_text(exc: OSError, path: str) -> str:
    where = exc.filename or path
    return f"cannot write {where}: {exc.strerror or exc} — check that folder's permissions and free space"


def _exit_fd(proc: subprocess.Popen) -> tuple[int, Any]:
    """A file descriptor that becomes readable when `proc` exits (it is not reaped), and what to
    close afterwards. A pidfd where the kernel has them; else a pipe a waiter thread writes to."""
    try:
        fd = os.pidfd_open(proc.pid)
        return fd, None
    except (AttributeError, OSError):
        pass
    r, w = os.pipe()

    def waiter() -> None:
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        except (OSError, AttributeError):
            proc.wait()
        try:
            os.write(w, b"x")
        except OSError:  # the reader is gone already
            pass
        finally:
            os.close(w)

    thread = threading.Thread(target=waiter, name=f"aup-wait-{proc.pid}", daemon=True)
    thread.start()
    return r, thread


def _output_until_exit(proc: subprocess.Popen) -> Iterator[bytes]:
    """The job's output as lines (as `readline(MAX_LINE)` gives them) until the job's script
    exits — not until every process that holds its stdout has closed it: a background child
    left holding the pipe must not keep the job alive. Once the script has exited, what is
    already in the pipe is read (for at most DRAIN_LIMIT s: a child may keep writing)."""
    assert proc.stdout is not None
    out = proc.stdout.fileno()
    exit_fd, _waiter = _exit_fd(proc)
    poller = select.poll()
    poller.register(out, select.POLLIN)
    poller.register(exit_fd, select.POLLIN)
    buf = b""
    exited_at: float | None = None
    try:
        while True:
            events = poller.poll(None if exited_at is None else 0)
            if not events:
                break  # exited and nothing more is waiting in the pipe
            data = None
            for fd, _ in events:
                if fd == exit_fd:
                    exited_at = time.monotonic()
                    poller.unregister(exit_fd)
                else:
                    data = os.read(out, 65536)
                    if not data:
                        if buf:
                            yield buf
                        return
            if data:
                buf += data
                start = 0
                while True:
                    nl = buf.find(b"\n", start, start + MAX_LINE)
                    if nl != -1:
                        yield buf[start:nl + 1]
                        start = nl + 1
                    elif len(buf) - start >= MAX_LINE:
                        yield buf[start:start + MAX_LINE]
                        start += MAX_LINE
                    else:
                        break
                buf = buf[start:]
            if exited_at is not None and time.monotonic() - exited_at > DRAIN_LIMIT:
                break
        if buf:
            yield buf
    finally:
        os.close(exit_fd)


def _wait_exited(proc: subprocess.Popen) -> None:
    """Wait until the job's script has exited, without reaping it."""
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:  # already reaped
        pass
    except AttributeError:  # no waitid here: reap it (leftovers are then killed just after)
        proc.wait()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
