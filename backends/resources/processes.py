"""Running a job as a local subprocess: its own process group, its own environment, its log.

The helpers the CPU manager (and so the GPU manager) runs jobs with; they import no manager
(`local` keeps the CPU manager's former name importable without an import cycle).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import threading

from ..jobs import Job

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
        stdin=_devnull(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
    )


_devnull_fd: int | None = None


def _devnull() -> int:
    """/dev/null, opened once (close-on-exec) for every job's stdin, not once per job."""
    global _devnull_fd
    if _devnull_fd is None:
        _devnull_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _devnull_fd


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


def exit_fd(proc: subprocess.Popen[bytes]) -> tuple[int, threading.Thread | None]:
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


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
