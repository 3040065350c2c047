"""How one job runs on a node, for the SSH/AWS managers: its files there, its run (attached to
its channel, or detached with `async_run` and polled), and the verdict on its exit.

:class:`NodeJobRunner` is a part of :class:`~aup_tui_backends.resources.ssh.SSHResourceManager`
(its base), kept in its own module so that each stays readable; it uses the manager's pool,
SFTP sessions, timeouts and output pump. The transport is :mod:`aup_tui_backends.ssh`'s.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import posixpath
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from .. import remote
from ..errors import JobError
from ..jobs import Job
from ..ssh import (
    CommandTimeoutError,
    ConnectionLost,
    NodePool,
    NodeUnreachableError,
    describe_error,
    exec_within,
)
from ..ssh.sftp import SFTPSessions, replace
from .output import MAX_LINE

__all__ = [
    "ASYNC_FIRST_POLL",
    "LAUNCH_TIMEOUT",
    "JobWrapping",
    "NodeJobRunner",
    "NodeJobState",
    "SFTPClient",
    "log_line",
]

log = logging.getLogger(__name__)
#: a paramiko SFTPClient (paramiko ships no type information)
SFTPClient = Any
LAUNCH_TIMEOUT = 30.0  # seconds for an async job to start
ASYNC_FIRST_POLL = 0.05  # async polls start this soon and double up to async_reconnect


@dataclass
class NodeJobState:
    """What the manager knows of one running job on a node."""

    name: str
    pool: NodePool
    workingdir: str | None = None  # the experiment's folder on the node, as written (None: the job's path)
    paths: remote.RemoteJobPaths | None = None
    pgid: int | None = None
    killed: threading.Event = field(default_factory=threading.Event)  # the kill on the node is done
    stop_requested: threading.Event = field(default_factory=threading.Event)
    kill_started: bool = False
    kill_result: str | None = None
    chan: Any = None  # the sync job's channel
    # async mode: when it started, how much of the remote log was read, an unfinished line
    started: float = 0.0
    offset: int = 0
    partial: bytes = b""
    last: str = ""
    failures: int = 0
    sftp: Any = None  # the SFTP client this attempt uses (a shared one another job may close)
    done: threading.Event = field(default_factory=threading.Event)  # `run` is over for this job
    released: bool = False  # `finish` stopped waiting for it (stopped, and still not over)


@dataclass(frozen=True)
class JobWrapping:
    """What wraps the job's command on the node (`remote.job_body`): variables set on its command
    line (`AUP_JOB_ID`), the text of its environment file (`runtime_args.env`, sent over SFTP;
    empty: no file), the prescript and the postscript."""

    env: dict[str, Any]
    env_text: str = ""
    prescript: str | None = None
    postscript: str | None = None

    def body(self, paths: remote.RemoteJobPaths) -> str:
        """The shell body that runs the job on the node."""
        return remote.job_body(
            paths,
            env=self.env,
            prescript=self.prescript,
            postscript=self.postscript,
            env_file=paths.env if self.env_text else None,
        )


class NodeJobRunner:
    """Running one job on a node (a base of SSHResourceManager)."""

    # what this part uses of the manager (set in SSHResourceManager.__init__ and its bases)
    pool: NodePool
    start_timeout: float
    async_reconnect: float
    async_timeout: float | None
    max_retries: int
    reconn_wait_time: float
    _sftp: SFTPSessions
    _ready: set[tuple[str, str, str]]
    _homes: dict[str, str]
    _stop_reasons: dict[int, str]
    _closing: threading.Event

    if TYPE_CHECKING:  # the manager's methods this part calls

        def ensure_jid(self, job: Job) -> int: ...
        def kill(self, job: Job) -> None: ...
        def pump_output(
            self, job: Job, chunks: Iterable[bytes], log: BinaryIO, keep: Callable[[str], bool] | None = None
        ) -> str: ...
        def _stopped(self, job: Job) -> bool: ...
        def _connection_broken(self, state: NodeJobState) -> bool: ...
        def _sftp_lost(self, state: NodeJobState) -> bool: ...
        def _kill_remote(self, job: Job, state: NodeJobState) -> None: ...
        def _read_remote_int(self, state: NodeJobState, path: str) -> int | None: ...

    # -- files on the node ----------------------------------------------------------------

    def _sftp_client(
        self, pool: NodePool, name: str, state: NodeJobState | None = None
    ) -> tuple[SFTPClient, threading.Lock]:
        """The node's shared SFTP client and the lock to hold while using it (noted on `state`,
        so that an error from a client another job closed meanwhile is known as such)."""
        sftp, lock = self._sftp.get(pool, name)
        if state is not None:
            state.sftp = sftp
        return sftp, lock

    def _remote_home(self, sftp: SFTPClient, name: str) -> str:
        home = self._homes.get(name)
        if home is None:
            home = self._homes[name] = sftp.normalize(".")
        return home

    def _remote_paths(self, job: Job, state: NodeJobState, sftp: SFTPClient) -> remote.RemoteJobPaths:
        """Where the job's files go on the node: `workingdir` there (`~` and a relative path
        from the node's home), the script as `workingdir/<its name>` (as Auptimizer copies it)."""
        wd = state.workingdir or os.path.abspath(job.path).replace(os.sep, "/")
        if wd == "~" or wd.startswith("~/"):
            wd = wd[2:]
        if not wd.startswith("/"):
            wd = posixpath.join(self._remote_home(sftp, state.name), wd)
        wd = posixpath.normpath(wd)
        script = posixpath.join(wd, os.path.basename(job.script_path))
        stem = f"best_job_{job.eid}" if job.save_model_flag and job.eid is not None else None
        return remote.RemoteJobPaths(
            workingdir=wd, script=script, jid=self.ensure_jid(job), attempt=job.attempt, stem=stem
        )

    def _prepare(
        self, job: Job, state: NodeJobState, runtime: dict[str, Any], env_text: str = ""
    ) -> remote.RemoteJobPaths:
        """Folders, script, config and environment file on the node; returns where the job's files are."""
        pool, name = state.pool, state.name
        sftp, lock = self._sftp_client(pool, name, state)
        with lock:
            paths = self._remote_paths(job, state, sftp)
            if (name, "dir", paths.jobs_dir) not in self._ready:
                _makedirs(sftp, paths.jobs_dir, pool.label(name))
                self._ready.add((name, "dir", paths.jobs_dir))
            if (name, "script", paths.script) not in self._ready:
                self._ensure_script(job, sftp, paths, pool.label(name), bool(runtime.get("overwrite")))
                self._ready.add((name, "script", paths.script))
            data = json.dumps({**job.config, "job_id": job.jid}).encode("utf-8")
            tmp = posixpath.join(paths.jobs_dir, f".{job.jid}.json.{uuid.uuid4().hex[:8]}.upload")
            with sftp.open(tmp, "wb") as f:
                f.write(data)
            replace(sftp, tmp, paths.config)
            if env_text:  # readable by the job's user only, before a byte of it is written
                tmp = posixpath.join(paths.jobs_dir, f".{job.jid}.env.{uuid.uuid4().hex[:8]}.upload")
                with sftp.open(tmp, "wb") as f:
                    f.chmod(0o600)
                    f.write(env_text.encode("utf-8"))
                replace(sftp, tmp, paths.env)
        state.paths = paths
        return paths

    def _drop_env_file(
        self, state: NodeJobState, paths: remote.RemoteJobPaths, wrapping: JobWrapping
    ) -> None:
        """A job stopped before it started leaves no copy of its environment on the node."""
        if not wrapping.env_text:
            return
        try:
            sftp, lock = self._sftp_client(state.pool, state.name, state)
            with lock:
                sftp.remove(paths.env)
        except Exception:  # best effort: the file is the user's own, mode 0600
            log.debug("could not remove %s on %s", paths.env, state.name, exc_info=True)

    def _ensure_script(
        self, job: Job, sftp: SFTPClient, paths: remote.RemoteJobPaths, label: str, overwrite: bool
    ) -> None:
        local = job.script_path
        try:
            remote_st = sftp.stat(paths.script)
        except FileNotFoundError:
            remote_st = None
        try:
            local_st = os.stat(local)
        except OSError:
            local_st = None
        if remote_st is not None and not overwrite:
            if stat.S_ISREG(remote_st.st_mode) and not remote_st.st_mode & stat.S_IXUSR:
                sftp.chmod(paths.script, stat.S_IMODE(remote_st.st_mode) | stat.S_IXUSR)  # as Auptimizer does
            return
        if local_st is None:
            if remote_st is not None:
                return
            raise JobError(
                f"job script {local} not found here nor as {paths.script} on {label}: "
                "fix 'script' (a file on this machine, relative to the folder you launch from)"
            )
        if (
            remote_st is not None
            and remote_st.st_size == local_st.st_size
            and int(remote_st.st_mtime or 0) == int(local_st.st_mtime)
        ):
            return  # the same file (or an identical copy): nothing to upload
        tmp = posixpath.join(
            posixpath.dirname(paths.script),
            f".{posixpath.basename(paths.script)}.{uuid.uuid4().hex[:8]}.upload",
        )
        _makedirs(sftp, posixpath.dirname(paths.script), label)
        sftp.put(local, tmp)
        sftp.chmod(tmp, stat.S_IMODE(local_st.st_mode) | stat.S_IXUSR | stat.S_IRUSR)
        sftp.utime(tmp, (local_st.st_atime, local_st.st_mtime))
        replace(sftp, tmp, paths.script)

    # -- synchronous ------------------------------------------------------------------------

    def _run_sync(
        self, job: Job, state: NodeJobState, runtime: dict[str, Any], wrapping: JobWrapping, logf: BinaryIO
    ) -> None:
        pool, name = state.pool, state.name
        label = pool.label(name)
        paths = self._prepare(job, state, runtime, wrapping.env_text)
        if self._stopped(job):
            self._drop_env_file(state, paths, wrapping)
            return
        body = wrapping.body(paths)
        chan = state.chan = pool.open_channel(name, timeout=self.start_timeout)
        try:
            chan.set_combine_stderr(True)
            try:
                exec_within(chan, remote.sync_command(paths, body), self.start_timeout, label)
            except CommandTimeoutError as exc:
                raise ConnectionLost(f"{exc} (job {job.jid})") from None
            except Exception as exc:
                raise ConnectionLost(f"lost the connection to {label}: {describe_error(exc)}") from None
            stream = chan.makefile("rb", 65536)
            # the wrapper's first line (its process group) comes at once: a command that does not
            # answer never started (a wedged channel), and the attempt is retried
            chan.settimeout(self.start_timeout)
            try:
                head = stream.readline(MAX_LINE)
            except TimeoutError:  # socket.timeout
                raise ConnectionLost(
                    f"job {job.jid} did not start on {label}: no answer on its channel "
                    f"within {self.start_timeout:g} s (start_timeout)"
                ) from None
            chan.settimeout(None)
            pgid = remote.parse_pgid(head.decode("utf-8", "replace"))
            if pgid is not None:
                state.pgid = pgid
                if job.jid in self._stop_reasons:
                    self.kill(job)
            rest = iter(lambda: stream.readline(MAX_LINE), b"")
            lines = rest if pgid is not None or not head else itertools.chain([head], rest)
            last = self.pump_output(job, lines, logf)
            chan.status_event.wait(10)  # the exit status follows the end of the output
            transport = chan.get_transport()
            lost = transport is None or not transport.is_active()
            if (not chan.exit_status_ready() or chan.exit_status == -1) and lost:
                pool.mark_down(name, f"lost the connection to {label}")
                raise ConnectionLost(f"lost the connection to {label} while job {job.jid} ran")
            code = chan.exit_status
        finally:
            chan.close()
        self._judge_exit(job, code, label, last, paths)

    def _judge_exit(self, job: Job, code: int, label: str, last: str, paths: remote.RemoteJobPaths) -> None:
        if job.jid in self._stop_reasons or job.error:
            return
        script = posixpath.basename(paths.script)
        if job.prescript_status is not None:
            job.error = (
                f"prescript exited with status {job.prescript_status} on {label}; "
                f"{script} did not run; see {job.log_path()}"
            )
            return
        if code == 0:
            return
        tail = f" (last output: {last!r})" if last else ""
        if code == remote.EXIT_NO_ENV:
            job.error = (
                f"the job's environment file {paths.env} vanished on {label} before the job started{tail}"
            )
        elif code == 126:
            job.error = (
                f"{script} could not be run on {label} (is {paths.script} executable there? "
                f"set runtime_args.overwrite to copy it again){tail}; see {job.log_path()}"
            )
        elif code == remote.EXIT_NO_WORKDIR:
            job.error = f"cannot enter the working folder {paths.workingdir} on {label}{tail}"
        elif code == -1:
            job.error = f"{script} was killed by a signal on {label}{tail}; see {job.log_path()}"
        elif code == 127 and "not found" in last:
            job.error = f"{script} could not be started on {label}{tail}; see {job.log_path()}"
        else:
            job.error = f"{script} exited with status {code} on {label}{tail}; see {job.log_path()}"

    # -- asynchronous -------------------------------------------------------------------------

    def _run_async(
        self, job: Job, state: NodeJobState, runtime: dict[str, Any], wrapping: JobWrapping, logf: BinaryIO
    ) -> None:
        pool, name = state.pool, state.name
        label = pool.label(name)
        if state.pgid is None and state.paths is not None:  # a launch whose answer was lost
            launched = self._read_remote_int(state, state.paths.pid)
            if launched:  # it did start: follow it rather than run it twice
                state.pgid, state.started = launched, time.monotonic()
        if state.pgid is None:  # not launched yet (a retry after a failed launch launches again)
            prepared = self._prepare(job, state, runtime, wrapping.env_text)
            if self._stopped(job):
                self._drop_env_file(state, prepared, wrapping)
                return
            body = wrapping.body(prepared)
            try:
                _, out, err = pool.run(name, remote.async_command(prepared, body), timeout=LAUNCH_TIMEOUT)
            except CommandTimeoutError as exc:
                raise ConnectionLost(str(exc)) from None
            pgid = next((p for p in map(remote.parse_pgid, out.splitlines()) if p is not None), None)
            if pgid is None:
                raise JobError(
                    f"could not start job {job.jid} on {label}: "
                    f"{(err or out).strip().splitlines()[-1] if (err or out).strip() else 'no answer'}"
                )
            state.pgid = pgid
            state.started = time.monotonic()
            state.offset, state.partial, state.last, state.failures = 0, b"", "", 0
            if job.jid in self._stop_reasons:
                self.kill(job)
        paths = state.paths
        assert paths is not None
        delay = ASYNC_FIRST_POLL
        while True:
            stopping = state.killed.wait(delay)
            delay = min(delay * 2, self.async_reconnect)
            try:
                code = self._poll_async(job, state, logf)
                state.failures = 0
            except Exception as exc:
                if (
                    not isinstance(
                        exc, (ConnectionLost, NodeUnreachableError, CommandTimeoutError, TimeoutError)
                    )
                    and not self._connection_broken(state)
                    and not self._sftp_lost(state)
                ):
                    raise
                if isinstance(exc, TimeoutError):  # its SFTP channel's requests are out of step now
                    self._sftp.drop(state.pool, state.name, state.sftp)
                if stopping or self._closing.is_set():
                    return
                state.failures += 1
                message = f"lost the connection to {label}: {describe_error(exc)}"
                if state.failures > self.max_retries:
                    job.error = (
                        f"{message} — gave up after {self.max_retries} retries "
                        f"{self.reconn_wait_time:g} s apart; job {job.jid} may still run there"
                    )
                    log_line(logf, f"[aup] {job.error}")
                    return
                log_line(
                    logf,
                    f"[aup] {message}; trying again in {self.reconn_wait_time:g} s "
                    f"({state.failures} of {self.max_retries}); the job keeps running there",
                )
                if state.killed.wait(self.reconn_wait_time):
                    continue
                continue
            if code is not None:
                self._judge_exit(job, code, label, state.last, paths)
                return
            if stopping:
                return
            if self.async_timeout is not None and time.monotonic() - state.started > self.async_timeout:
                job.error = (
                    f"job {job.jid} on {label} had not ended after async_timeout "
                    f"{self.async_timeout:g} s; it was stopped"
                )
                log_line(logf, f"[aup] {job.error}")
                self._kill_remote(job, state)
                return

    def _poll_async(self, job: Job, state: NodeJobState, logf: BinaryIO) -> int | None:
        """New output since the last poll, and the exit status once the job has ended."""
        sftp, lock = self._sftp_client(state.pool, state.name, state)
        paths = state.paths
        if paths is None:  # set by `_prepare` before the job was launched
            raise RuntimeError(f"job {job.jid} is polled before its files were prepared on {state.name}")
        with lock:
            try:
                with sftp.open(paths.rc, "rb") as f:
                    text = f.read(64).decode("ascii", "replace").strip()
                code: int | None = int(text) if text.lstrip("-").isdigit() else None
            except FileNotFoundError:
                code = None
            try:
                with sftp.open(paths.log, "rb") as f:
                    f.seek(state.offset)
                    data = f.read()
            except FileNotFoundError:
                data = b""
        state.offset += len(data)
        if data:
            text = state.partial + data
            lines = text.splitlines(keepends=True)
            state.partial = lines.pop() if lines and not lines[-1].endswith(b"\n") and code is None else b""
            last = self.pump_output(job, lines, logf)
            state.last = last or state.last
        elif code is not None and state.partial:
            last = self.pump_output(job, [state.partial], logf)
            state.partial = b""
            state.last = last or state.last
        return code


def log_line(logf: BinaryIO, text: str) -> None:
    """One `[aup]` line in the job's local log (a closed or full log is not the job's failure)."""
    try:
        logf.write((text + "\n").encode("utf-8"))
        logf.flush()
    except (OSError, ValueError):
        pass


def _makedirs(sftp: SFTPClient, path: str, label: str) -> None:
    """`mkdir -p` over SFTP."""
    parts = [p for p in path.split("/") if p]
    current = "/" if path.startswith("/") else ""
    for part in parts:
        current = posixpath.join(current, part) if current else part
        try:
            st = sftp.stat(current)
        except FileNotFoundError:
            try:
                sftp.mkdir(current)
            except OSError:
                try:
                    st = sftp.stat(current)  # made meanwhile by another job
                except FileNotFoundError:
                    raise JobError(
                        f"cannot create the folder {current} on {label}: check the permissions "
                        "there or fix 'workingdir' (a folder on the node)"
                    ) from None
                if not stat.S_ISDIR(st.st_mode):
                    raise JobError(f"{current} on {label} is not a folder") from None
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise JobError(f"{current} on {label} is a file, not a folder: fix 'workingdir'")
