"""What runs on a Ray worker for one job, and what kills a job's processes on its node.

The standard library only: :mod:`.ray` ships these functions by value (cloudpickle), so a
cluster's nodes need Ray and Python, not aup-tui. The job's script and config come as bytes
with the task and are written to a private folder on the node; the script runs in a session
(process group) of its own, its output comes back in batches of lines as it is written, and
the last item is the exit status. Whatever is left in its group is killed before the task ends.

Items the generator yields (plain tuples, cheap to pickle):
``("started", node_id, node_ip, pgid, gpu_ids)``, ``("out", [line, …])``,
``("exit", status, [line, …])``, or ``("error", text)`` when the script could not be started.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Generator, Iterator
from typing import Any

MAX_LINE = 1 << 20  # as the managers' pump: a longer line comes in pieces of this size
DRAIN_LIMIT = 2.0  # seconds to read what leftover children still write after the script exited

Item = tuple[Any, ...]


def run_job(
    script: bytes,
    script_name: str,
    config: bytes,
    config_name: str,
    env: dict[str, str],
    wrapper: list[str],
    workingdir: str,
    use_task_cwd: bool,
) -> Iterator[Item]:
    """Run one job on this node (a Ray generator task). `wrapper` goes before the script's
    command (the prescript/postscript shell wrapper, or nothing); the job runs in `workingdir`
    when that folder exists here, in Ray's working_dir when `use_task_cwd`, else in its own
    folder."""
    import ray  # on the worker: Ray is there

    context = ray.get_runtime_context()
    node_id = context.get_node_id()
    node_ip_address: Any = ray.util.get_node_ip_address  # untyped in Ray
    node_ip = str(node_ip_address())
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    folder = tempfile.mkdtemp(prefix="aup-ray-job-")
    proc: subprocess.Popen[bytes] | None = None
    reaped = False
    try:
        script_path = os.path.join(folder, os.path.basename(script_name) or "job")
        with open(os.open(script_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700), "wb") as f:
            f.write(script)
        os.makedirs(os.path.join(folder, "jobs"))
        config_path = os.path.join(folder, "jobs", config_name)
        with open(config_path, "wb") as f:
            f.write(config)
        cwd = os.getcwd() if use_task_cwd else workingdir if os.path.isdir(workingdir) else folder
        child_env = dict(os.environ)
        child_env.update(env)
        try:
            proc = subprocess.Popen(
                [*wrapper, script_path, config_path],
                cwd=cwd,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            yield ("error", f"could not start {script_name} on {node_ip}: {exc.strerror or exc}")
            return
        yield ("started", node_id, node_ip, proc.pid, gpu_ids)
        assert proc.stdout is not None
        lines, tail = yield from _follow(proc)
        code = proc.wait()
        reaped = True
        yield ("exit", code, lines + ([tail] if tail else []))
    finally:
        if proc is not None:
            if not reaped:  # the task was interrupted: nothing of the job outlives it
                _kill(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        shutil.rmtree(folder, ignore_errors=True)


def _follow(proc: subprocess.Popen[bytes]) -> Generator[Item, None, tuple[list[bytes], bytes]]:
    """Yield the job's output in batches of whole lines until it is over; returns the lines of
    the last read and an unfinished last line. Leftover processes in the job's group are killed
    once the script has exited (while its zombie still holds the group id)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    exited_at: float | None = None
    while True:
        ready, _, _ = select.select([fd], [], [], 0.2)
        lines: list[bytes] = []
        eof = False
        while ready:  # everything there now, in one batch
            data = os.read(fd, 65536)
            if not data:
                eof = True
                break
            buf += data
            ready, _, _ = select.select([fd], [], [], 0)
        if buf:
            *complete, buf = buf.split(b"\n")
            lines = [line + b"\n" for line in complete]
            while len(buf) >= MAX_LINE:
                lines.append(buf[:MAX_LINE])
                buf = buf[MAX_LINE:]
        if exited_at is None and _exited(proc.pid):
            exited_at = time.monotonic()
        if eof or (exited_at is not None and time.monotonic() - exited_at > DRAIN_LIMIT):
            _kill(proc.pid, signal.SIGKILL)  # what the script left in its group
            return lines, buf
        if lines:
            yield ("out", lines)


def _exited(pid: int) -> bool:
    """Whether `pid` has exited, without reaping it (its group id stays its own)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None and info.si_pid == pid


def _kill(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def kill_group(pgid: int, grace: float) -> str:
    """SIGTERM the job's process group on this node, SIGKILL after `grace` s; "gone" when
    nothing of it is left, else why (a Ray task pinned to the job's node runs it)."""
    if not _kill(pgid, signal.SIGTERM):
        return "gone"
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _kill(pgid, 0):
            return "gone"
        time.sleep(0.02)
    _kill(pgid, signal.SIGKILL)
    for _ in range(100):
        if not _kill(pgid, 0):
            return "gone"
        time.sleep(0.02)
    return f"process group {pgid} still there after SIGKILL"
