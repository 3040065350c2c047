"""Running a job as a local subprocess: its own process group, its own environment, its log.

The helpers the CPU manager (and so the GPU manager) runs jobs with; they import no manager
(`local` keeps the CPU manager's former name importable without an import cycle).
"""

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

from ..jobs import Job
from .abstract import MAX_LINE

logger = logging.getLogger(__name__)

KILL_GRACE = 0.5  # seconds between SIGTERM and SIGKILL to the job's process group
DRAIN_LIMIT = 2.0  # seconds to read what a job's leftover children keep writing after it exited


def start_process(argv: list[str], cwd: str, env: dict[bytes, bytes]) -> subprocess.Popen[bytes]:
    """Start a job's process in a session of its own, stdin from /dev/null, stdout and stderr into
    one pipe; OSError when it cannot start.

    Popen (vfork), not `os.posix_spawn`: spawn costs the parent less CPU but holds the GIL while
    the child execs, which stalls the other slots' threads (measured: slower dispatch)."""
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
    )


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


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


def _exit_fd(proc: subprocess.Popen[bytes]) -> tuple[int, threading.Thread | None]:
    """A file descriptor that becomes readable when `proc` exits (it is not reaped), and what to
    keep until then. A pidfd where the kernel has them; else a pipe a waiter thread writes to."""
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


def _output_until_exit(proc: subprocess.Popen[bytes]) -> Iterator[bytes]:
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
                        yield buf[start : nl + 1]
                        start = nl + 1
                    elif len(buf) - start >= MAX_LINE:
                        yield buf[start : start + MAX_LINE]
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


def _wait_exited(proc: subprocess.Popen[bytes]) -> None:
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
