"""What runs on a Ray worker for one job, and what kills a job's processes on its node.

The standard library only: :mod:`.ray` ships these functions by value (cloudpickle), so a
cluster's nodes need Ray and Python, not aup-tui. The job's script and config come as bytes
with the task and are written to the worker's private folder on the node (the script once per
worker, by content; the config per job, removed after it); the script runs in a session
(process group) of its own, its output comes back in batches of lines as it is written, and
the last item is the exit status. Whatever is left in its group is killed before the task ends.

The generator yields :data:`Item` tuples (cheap to pickle): where the job runs comes with its
first batch of output, the exit status with its last; a trivial job is one item, one round trip.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

MAX_LINE = 1 << 20  # as the managers' pump: a longer line comes in pieces of this size
DRAIN_LIMIT = 2.0  # seconds to read what leftover children still write after the script exited
HEADER_DELAY = 0.05  # s: where the job runs is told with its first output, or after this long
DRAIN_WAIT = 0.002  # s to wait for more output (or the end) before sending a batch

#: where the job runs: (Ray node id, node address, process group id, GPU ids)
Header = tuple[str, str, int, list[str]]
#: one batch: (Header on the first one, else None; lines; exit status on the last one; error)
Item = tuple[Header | None, list[bytes], int | None, str | None]


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

    node_id, node_ip, base_env = _worker()
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    proc: subprocess.Popen[bytes] | None = None
    reaped = False
    config_path = ""
    try:
        script_path = _script_file(script, script_name)
        config_path = os.path.join(_folder(), f"{os.getpid()}.{uuid.uuid4().hex}.{config_name}")
        with open(config_path, "wb") as f:
            f.write(config)
        folder = os.path.dirname(script_path)
        cwd = os.getcwd() if use_task_cwd else workingdir if os.path.isdir(workingdir) else folder
        child_env = dict(base_env)
        child_env.update((os.fsencode(k), os.fsencode(v)) for k, v in env.items())
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
            yield (None, [], None, f"could not start {script_name} on {node_ip}: {exc.strerror or exc}")
            return
        header: Header | None = (node_id, node_ip, proc.pid, gpu_ids)
        for lines, final in _follow(proc):
            if final:
                code = proc.wait()
                reaped = True
                yield (header, lines, code, None)
                return
            yield (header, lines, None, None)
            header = None
    finally:
        if proc is not None:
            if not reaped:  # the task was interrupted: nothing of the job outlives it
                _kill(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if config_path:
            try:
                os.unlink(config_path)
            except OSError:
                pass


def _follow(proc: subprocess.Popen[bytes]) -> Iterator[tuple[list[bytes], bool]]:
    """The job's output in batches of whole lines (and an unfinished last line in the final
    batch), as `(lines, final)`; an empty first batch after HEADER_DELAY s without output (the
    driver learns where the job runs). Leftover processes in the job's group are killed once the
    script has exited (while its zombie still holds the group id)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    started = time.monotonic()
    quiet = True  # nothing yielded yet
    exited_at: float | None = None
    while True:
        ready, _, _ = select.select([fd], [], [], HEADER_DELAY if quiet else 0.2)
        lines: list[bytes] = []
        eof = False
        while ready:  # everything there now (and what follows at once: often the end), in one batch
            data = os.read(fd, 65536)
            if not data:
                eof = True
                break
            buf += data
            ready, _, _ = select.select([fd], [], [], DRAIN_WAIT)
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
            yield lines + ([buf] if buf else []), True
            return
        if lines or (quiet and time.monotonic() - started >= HEADER_DELAY):
            yield lines, False
            quiet = False


_WORKER: list[tuple[str, str, dict[bytes, bytes]]] = []


def _worker() -> tuple[str, str, dict[bytes, bytes]]:
    """This worker's node id and address and its environment, encoded (once per worker: the
    same for every job it runs; Ray sets CUDA_VISIBLE_DEVICES per task, read fresh)."""
    import ray

    if not _WORKER:
        node_ip_address: Any = ray.util.get_node_ip_address  # untyped in Ray
        node = (ray.get_runtime_context().get_node_id(), str(node_ip_address()))
        env = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
        _WORKER.append((*node, env))
    node_id, node_ip, env = _WORKER[0]
    cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cuda is not None:
        env = {**env, b"CUDA_VISIBLE_DEVICES": os.fsencode(cuda)}
    return node_id, node_ip, env


_FOLDER: list[str] = []  # this worker's folder for scripts and configs, made on its first job
_SCRIPTS: dict[tuple[str, str], str] = {}  # (content hash, name) → the script's file here


def _folder() -> str:
    """A private folder for this worker process (removed when it exits normally)."""
    if not _FOLDER:
        folder = tempfile.mkdtemp(prefix="aup-ray-")
        atexit.register(shutil.rmtree, folder, True)
        _FOLDER.append(folder)
    return _FOLDER[0]


def _script_file(script: bytes, name: str) -> str:
    """The script written once per worker (by content): the next jobs of the experiment reuse it."""
    key = (hashlib.sha256(script).hexdigest(), os.path.basename(name) or "job")
    path = _SCRIPTS.get(key)
    if path is None:
        folder = os.path.join(_folder(), key[0][:16])
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, key[1])
        tmp = f"{path}.{uuid.uuid4().hex}"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700), "wb") as f:
            f.write(script)
        os.replace(tmp, path)
        _SCRIPTS[key] = path
    return path


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
