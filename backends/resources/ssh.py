"""Jobs on SSH nodes (`resource: "node"`), over the node pool's persistent connections.

As in Auptimizer 2.0, `workingdir` is a folder on the node (`~` = the node's home) and
`script` a file here (the experiment's `remote_workingdir` and the job's `script_path`; see
`aup_tui_backends.config`). Before a node's first job its `workingdir` and `workingdir/jobs` are made
there over SFTP and the local script is copied in as `workingdir/<script's name>` when it is
missing there (or `runtime_args.overwrite` is set and it differs), and made executable. Each
job uploads its config to `workingdir/jobs/<jid>.json` and runs `prescript; cd <workingdir>;
./<script> jobs/<jid>.json; postscript` with its `env` in a session of its own. Its output
streams back line by line (intermediate results go to the store as they come) and is kept on
the node (`jobs/<jid>.<attempt>.remote.out`) and here, in `jobs/` beside the local script
(`jobs/<jid>.<attempt>.out`, with the config's local copy). Nothing of `workingdir` is made or
looked up on this machine.

A job's command must answer on its channel within `start_timeout` s (the channel's opening,
the request to run it, its first line): a node that accepts the request but never starts the
command fails the attempt, which is retried like a lost connection.

`async_run`: the job runs detached (nohup, new session), so it survives the connection; the
manager collects new output and the exit status every `async_reconnect` s (sooner at first),
and gives up after `async_timeout` s.

A lost or refused connection is retried `max_retries` times, `reconn_wait_time` s apart; then the
job fails and the experiment retries it on another node. A node the monitor (or the pool)
reports DOWN gets no new jobs. Stopping a job kills its whole process group on the node and
checks that nothing of it is left. Every command is built with `shlex.quote` (`aup_tui_backends.remote`).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import posixpath
import random
import stat
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .. import remote
from ..config import HostSpec, load_env, parse_host
from ..errors import AupError, ConfigError
from ..events import Notice
from ..jobs import Job, JobError
from ..monitors.nodes import (
    CommandTimeoutError,
    NodeError,
    NodePool,
    NodeUnreachableError,
    describe_error,
    exec_within,
    host_label,
)
from .abstract import MAX_LINE, Callback
from .cpu import CPUResourceManager

log = logging.getLogger(__name__)
LAUNCH_TIMEOUT = 30.0  # seconds for an async job to start
START_TIMEOUT = 30.0  # default seconds for a sync job's command to answer on its channel
ASYNC_FIRST_POLL = 0.05  # async polls start this soon and double up to async_reconnect


class ConnectionLost(AupError):
    """The connection to a node broke (or was refused) while a job needed it."""


class _LocalJobsError(AupError):
    """The local `jobs/` folder beside the script cannot be made."""


@dataclass
class _RemoteState:
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


class SSHResourceManager(CPUResourceManager):
    """`SSHResourceManager(connector, n_parallel, key='node_mapping', auppath='.aup', async_reconnect=30,
    async_timeout=None, async_run=False, reconn_wait_time=30, max_retries=3, **kwargs)`.

    Extra keyword arguments (all optional): `pool` (a shared :class:`NodePool`), `monitor` (a
    :class:`NodeMonitor`, whose pool is then used), `known_hosts`, `accept_new_hosts` (False:
    unknown host keys are refused), `connect_timeout`, `start_timeout` (seconds a job's command
    may take to answer on its channel before the attempt is retried; default 30),
    `reuse_connections` (True; False opens a new connection per job, as Auptimizer did),
    `kill_grace` (seconds between SIGTERM and SIGKILL).

    The folder on the node is the experiment's `workingdir` (`exp_config.remote_workingdir`);
    for an `exp_config` without one, the job's `path` (the same path on the node as here).
    """

    rtype = "node"

    def __init__(
        self,
        connector,
        n_parallel: int,
        key: str = "node_mapping",
        auppath: str = ".aup",
        async_reconnect: float = 30,
        async_timeout: float | None = None,
        async_run: bool = False,
        reconn_wait_time: float = 30,
        max_retries: int = 3,
        **kwargs: Any,
    ) -> None:
        monitor = kwargs.pop("monitor", None)
        pool = kwargs.pop("pool", None) or (monitor.pool if monitor is not None else None)
        known_hosts = kwargs.pop("known_hosts", None)
        accept_new_hosts = bool(kwargs.pop("accept_new_hosts", False))
        connect_timeout = float(kwargs.pop("connect_timeout", 10.0))
        self.start_timeout = max(0.1, float(kwargs.pop("start_timeout", START_TIMEOUT)))
        self.reuse_connections = bool(kwargs.pop("reuse_connections", True))
        self.kill_grace = float(kwargs.pop("kill_grace", 2.0))
        #: the experiment's folder on the node, for save_model's re-run (which has no exp_config):
        #: given, or the one the experiment's jobs were run with
        self.remote_workingdir: str | None = kwargs.pop("remote_workingdir", None)
        super().__init__(connector, n_parallel, **kwargs)
        self.key = key
        self.auppath = auppath
        self.async_run = bool(async_run)
        self.async_reconnect = max(0.01, float(async_reconnect))
        self.async_timeout = None if async_timeout in (None, "", 0) else float(async_timeout)
        self.reconn_wait_time = max(0.0, float(reconn_wait_time))
        self.max_retries = max(0, int(max_retries))
        self.monitor = monitor
        self._own_pool = pool is None
        self.pool: NodePool = pool or NodePool(
            known_hosts=known_hosts, accept_new_hosts=accept_new_hosts, connect_timeout=connect_timeout
        )
        self._pool_options = dict(
            known_hosts=self.pool.known_hosts,
            accept_new_hosts=self.pool.accept_new_hosts,
            connect_timeout=self.pool.connect_timeout,
        )
        self._states: dict[int, _RemoteState] = {}
        self._sftp: dict[tuple[int, str], tuple[Any, Any]] = {}  # (id(pool), name) → (transport, SFTPClient)
        self._sftp_locks: dict[tuple[int, str], threading.Lock] = {}
        self._ready: set[tuple] = set()  # (name, what, path) done on this node: folders made, script checked
        self._homes: dict[str, str] = {}
        self._rechecks: dict[str, float] = {}  # node → when it was last tried again (no monitor)
        self._rechecking: set[str] = set()
        self._broken: dict[str, str] = {}  # node → why it cannot be used until a person fixes it
        self._all_down_since: float | None = None
        self._down_noticed: set[str] = set()
        self._closing = threading.Event()
        self._model_paths: dict[int, remote.RemoteJobPaths] = {}  # save_model re-run's files on the node
        self.names: dict[int, str] = {}  # rid → node name in the pool
        self.specs: dict[int, HostSpec] = {}
        mapping = self.load_node_mapping(key, auppath)
        if not mapping:
            env = load_env(auppath)
            what = "--aws USER@INSTANCE_ID[:PORT]" if key == "aws_mapping" else "--node USER@HOST[:PORT]"
            raise ConfigError(
                f"no {'instances' if key == 'aws_mapping' else 'nodes'} in {key} of {env.path}: "
                f"add some with `aup-tui init --overwrite {what}` (with the flags of the "
                "resources to keep), e.g. `aup-tui init --overwrite "
                f"{'--aws ubuntu@i-0123456789abcdef0' if key == 'aws_mapping' else '--node me@192.0.2.10'}`"
            )
        for rid, (name, spec) in self._resolve_nodes(mapping).items():
            self.names[rid], self.specs[rid] = name, spec
            self.pool.add_node(name, spec)

    # -- nodes ----------------------------------------------------------------------------

    @staticmethod
    def load_node_mapping(key: str = "node_mapping", auppath: str = ".aup") -> dict[int, str]:
        """Resource id → host spec (`user@host[:port] [key]`) from env.ini's `key` mapping."""
        env = load_env(auppath)
        mapping = getattr(env, key, None)
        if mapping is None:
            mapping = env.extra.get(key)
            if isinstance(mapping, str):
                try:
                    mapping = json.loads(mapping) if mapping.strip() else {}
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{key} in {env.path} is not valid JSON ({exc.msg})") from None
        result: dict[int, str] = {}
        for rid, value in (mapping or {}).items():
            try:
                result[int(rid)] = str(value)
            except ValueError:
                raise ConfigError(
                    f"{key} in {env.path} has the resource id {rid!r}: ids must be whole numbers"
                ) from None
        return result

    def pool_name(self, rid: int) -> str:
        """The node's name in the pool: `node <rid>` (`aws <rid>`), as the TUI's monitor names it,
        so a shared pool/monitor and this manager mean the same node by the same name."""
        return f"{'aws' if self.key == 'aws_mapping' else 'node'} {rid}"

    def _resolve_nodes(self, mapping: dict[int, str]) -> dict[int, tuple[str, HostSpec]]:
        """rid → (pool name, HostSpec)."""
        return {rid: (self.pool_name(rid), parse_host(value)) for rid, value in mapping.items()}

    def node_name(self, rid: int) -> str:
        return self.names[rid]

    def node_label(self, rid: int) -> str:
        return host_label(self.specs[rid])

    def _is_down(self, name: str) -> bool:
        try:
            down = self.monitor.is_down(name) if self.monitor is not None else self.pool.is_down(name)
        except NodeError:
            return True
        if down and self.monitor is None:
            self._schedule_recheck(name)
        return down

    def _schedule_recheck(self, name: str) -> None:
        """Without a monitor, a DOWN node is tried again (in the background) every reconn_wait_time s."""
        now = time.monotonic()
        with self._lock:
            last = self._rechecks.get(name)
            if name in self._rechecking or (
                last is not None and now - last < max(self.reconn_wait_time, 0.05)
            ):
                return
            self._rechecks[name] = now
            self._rechecking.add(name)

        def probe() -> None:
            try:
                self.pool.get_client(name)
                self._broken.pop(name, None)
            except NodeUnreachableError:
                pass
            except NodeError as exc:  # host key, authentication: not going to fix itself
                self._broken[name] = _node_error_text(exc)
            except Exception:
                pass
            finally:
                with self._lock:
                    self._rechecking.discard(name)
                    self._rechecks[name] = time.monotonic()

        threading.Thread(target=probe, name=f"aup-recheck-{name}", daemon=True).start()

    def get_available(self, username: str | None, rtype: str, rid_blacklist: Any = None) -> int | None:
        """A random free node (not blacklisted, not DOWN), or None."""
        rids = self.connector.get_available_resource(rtype, rid_blacklist)
        ok = []
        for rid in rids:
            name = self.names.get(rid)
            if name is None:
                continue
            if self._is_down(name):
                if name not in self._down_noticed:
                    self._down_noticed.add(name)
                    reason = self.pool.last_error(name) if not self.monitor else ""
                    self._notice(
                        f"node {self.node_label(rid)} is down; it gets no new jobs until it is back"
                        + (f" ({reason})" if reason else ""),
                        "warning",
                    )
                continue
            self._down_noticed.discard(name)
            ok.append(rid)
        if ok:
            self._all_down_since = None
        elif all(self._is_down(name) for name in self.names.values()) and not self._states:
            # nothing runs and no node answers: retry as for a job, then give up with the reason
            now = time.monotonic()
            if self._all_down_since is None:
                self._all_down_since = now
            elif now - self._all_down_since > max(self.max_retries, 1) * self.reconn_wait_time + 1:
                name = next(iter(self.names.values()))
                reason = self.pool.last_error(name) or "down"
                raise NodeUnreachableError(
                    f"no node can be reached ({reason}); tried for {now - self._all_down_since:.0f} s "
                    "(max_retries × reconn_wait_time): check the nodes and node_mapping/aws_mapping in env.ini"
                )
        if not ok and self._broken and all(name in self._broken for name in self.names.values()):
            # every node needs a person to fix something: say so rather than wait forever
            first = next(iter(self._broken.values()))
            more = len(set(self.names.values())) - 1
            raise NodeError(
                first
                + (f" (and {more} more {'node' if more == 1 else 'nodes'} cannot be used)" if more else "")
            )
        return random.choice(ok) if ok else None

    def _notice(self, message: str, level: str = "info") -> None:
        log.log(logging.WARNING if level != "info" else logging.INFO, "%s", message)
        self.bus.publish(Notice(message=message, eid=self.eid, level=level))

    def _update_job_counts(self) -> None:
        if self.monitor is None:
            return
        counts: dict[str, int] = {}
        with self._lock:
            for state in self._states.values():
                counts[state.name] = counts.get(state.name, 0) + 1
        try:
            self.monitor.set_job_counts(counts)
        except Exception:  # the monitor is optional decoration
            pass

    # -- running a job --------------------------------------------------------------------

    def run(self, job: Job, rid: int, exp_config: Any, call_back_func: Callback, **kwargs: Any) -> None:
        runtime = dict(getattr(exp_config, "runtime_args", None) or {})
        runtime.update(kwargs)
        name = self.names[rid]
        label = self.node_label(rid)
        pool = (
            self.pool if self.reuse_connections else NodePool({name: self.specs[rid]}, **self._pool_options)
        )
        wd = getattr(exp_config, "remote_workingdir", None)
        if wd and not self.remote_workingdir:
            self.remote_workingdir = str(wd)
        elif not wd and job.save_model_flag:  # save_model's re-run: where the experiment's jobs ran
            wd = self.remote_workingdir
        state = _RemoteState(name=name, pool=pool, workingdir=str(wd) if wd else None)
        with self._lock:
            self._states[job.jid] = state
        self._update_job_counts()
        local_jobs = os.path.join(job.path, "jobs")  # beside the local script (not the node's workingdir)
        try:
            if os.path.exists(local_jobs) and not os.path.isdir(local_jobs):
                raise _LocalJobsError(
                    f"{local_jobs} is a file, but the job's config and log are kept in a folder "
                    "of that name beside the script: move the file away"
                )
            try:
                os.makedirs(local_jobs, exist_ok=True)
            except OSError as exc:
                raise _LocalJobsError(
                    f"cannot create {local_jobs} for the job's config and log "
                    f"({exc.strerror or exc}): make the script's folder writable"
                ) from None
            with open(job.log_path(), "wb") as logf:
                self._run_with_retries(job, rid, label, state, runtime, logf)
                if state.kill_started:  # the job ends once the node confirmed nothing of it is left
                    state.killed.wait(self.kill_grace + 20)
                    if state.kill_result and state.kill_result != "gone":
                        _log_line(logf, f"[aup] stopping job {job.jid} on {label}: {state.kill_result}")
        except _LocalJobsError as exc:
            job.error = str(exc)
        except OSError as exc:
            job.error = job.error or f"cannot write the log {job.log_path()}: {exc.strerror or exc}"
        finally:
            if job.save_model_flag and state.paths is not None:
                self._model_paths[job.jid] = state.paths  # where collect_models finds its models
            with self._lock:
                self._states.pop(job.jid, None)
            state.killed.set()  # nothing of it runs any more: whoever waits for its end may go on
            state.done.set()
            self._update_job_counts()
            if pool is not self.pool:
                self._drop_sftp(pool, name)
                pool.close()
        call_back_func(job.results[-1][0] if job.results else None, job.jid)

    def _stopped(self, job: Job) -> bool:
        return job.jid in self._stop_reasons or self._closing.is_set()

    def _run_with_retries(
        self, job: Job, rid: int, label: str, state: _RemoteState, runtime: dict, logf
    ) -> None:
        try:
            job.write_config()  # the local record of the parameters
            # runtime_args.env goes to the node in a 0600 file, never on a command line (`ps`)
            env_text = remote.env_file_text(runtime.get("env"))  # a bad name or value fails here, once
            body_args = dict(
                env={"AUP_JOB_ID": job.jid},
                env_text=env_text,
                prescript=runtime.get("prescript"),
                postscript=runtime.get("postscript"),
            )
        except (AupError, OSError) as exc:
            job.error = str(exc)
            return
        failures = 0
        while not self._stopped(job):
            try:
                if self.async_run:
                    self._run_async(job, state, runtime, body_args, logf)
                else:
                    self._run_sync(job, state, runtime, body_args, logf)
                return
            except ConnectionLost as exc:
                message = str(exc)
            except TimeoutError:  # an SFTP answer that did not come within start_timeout
                self._drop_sftp(state.pool, state.name, state.sftp)
                message = f"no answer from {label} within {self.start_timeout:g} s (start_timeout)"
            except NodeError as exc:  # host key, authentication, missing key file: no point retrying
                if isinstance(exc, NodeUnreachableError):
                    message = str(exc)
                else:
                    job.error = self._broken[state.name] = _node_error_text(exc)
                    return
            except (AupError, OSError) as exc:
                if self._connection_broken(state):
                    message = f"lost the connection to {label}: {exc}"
                elif self._sftp_lost(state):
                    message = _sftp_lost_text(label, exc)
                else:
                    job.error = f"on {label}: {exc}" if label not in str(exc) else str(exc)
                    return
            except Exception as exc:  # paramiko's SSHException, EOFError, …
                if self._connection_broken(state):
                    message = f"lost the connection to {label}: {describe_error(exc)}"
                elif self._sftp_lost(state):
                    message = _sftp_lost_text(label, exc)
                else:
                    raise
            if self._stopped(job):
                return
            failures += 1
            if failures > self.max_retries:
                job.error = (
                    message
                    if not self.max_retries
                    else (
                        f"{message} — gave up after {self.max_retries} "
                        f"{'retry' if self.max_retries == 1 else 'retries'} {self.reconn_wait_time:g} s apart"
                    )
                )
                _log_line(logf, f"[aup] {job.error}")
                return
            _log_line(
                logf,
                f"[aup] {message}; retrying in {self.reconn_wait_time:g} s "
                f"({failures} of {self.max_retries})",
            )
            if state.stop_requested.wait(self.reconn_wait_time):
                return
            if not self.async_run:
                self._kill_leftover(state)

    def _connection_broken(self, state: _RemoteState) -> bool:
        try:
            return not state.pool.is_connected(state.name)
        except NodeError:
            return True

    def _sftp_lost(self, state: _RemoteState) -> bool:
        """The shared SFTP client this attempt used was closed under it (another job's request
        on it timed out, which drops it): the attempt is retried like a lost connection."""
        sftp = state.sftp
        if sftp is None:
            return False
        cached = self._sftp.get((id(state.pool), state.name))
        return cached is None or cached[1] is not sftp or bool(getattr(sftp.sock, "closed", False))

    # -- files on the node ----------------------------------------------------------------

    def _sftp_client(self, pool: NodePool, name: str, state: _RemoteState | None = None):
        """The node's shared SFTP client and the lock to hold while using it (noted on `state`,
        so that an error from a client another job closed meanwhile is known as such)."""
        sftp, lock = self._open_sftp(pool, name)
        if state is not None:
            state.sftp = sftp
        return sftp, lock

    def _open_sftp(self, pool: NodePool, name: str):
        import paramiko

        key = (id(pool), name)
        with self._lock:
            lock = self._sftp_locks.setdefault(key, threading.Lock())
        with lock:
            transport = pool.get_transport(name)
            cached = self._sftp.get(key)
            if cached is not None and cached[0] is transport and transport.is_active():
                return cached[1], lock
            try:  # every SFTP answer within start_timeout: a wedged channel fails the attempt, not hangs it
                chan = transport.open_session(timeout=self.start_timeout)
                chan.settimeout(self.start_timeout)
                exec_within(chan, "sftp", self.start_timeout, pool.label(name), subsystem=True)
                sftp = paramiko.SFTPClient(chan)
            except (CommandTimeoutError, TimeoutError) as exc:
                raise ConnectionLost(
                    f"{pool.label(name)} did not start SFTP within {self.start_timeout:g} s "
                    f"(start_timeout): {describe_error(exc)}"
                ) from None
            except Exception as exc:
                if not transport.is_active():
                    pool.mark_down(name, f"lost the connection to {pool.label(name)}: {describe_error(exc)}")
                    raise ConnectionLost(
                        f"lost the connection to {pool.label(name)}: {describe_error(exc)}"
                    ) from None
                raise NodeError(
                    f"cannot open SFTP on {pool.label(name)} ({describe_error(exc)}) — "
                    "enable the sftp subsystem in its sshd_config",
                    name,
                ) from None
            if cached is not None:
                _quiet(cached[1].close)
            self._sftp[key] = (transport, sftp)
            return sftp, lock

    def _drop_sftp(self, pool: NodePool, name: str, sftp: Any = None) -> None:
        """Close the node's shared SFTP client (only if it is still `sftp`, when given: one
        opened since by another job stays)."""
        key = (id(pool), name)
        with self._lock:
            cached = self._sftp.get(key)
            if cached is None or (sftp is not None and cached[1] is not sftp):
                return
            del self._sftp[key]
        _quiet(cached[1].close)

    def _remote_home(self, sftp, name: str) -> str:
        home = self._homes.get(name)
        if home is None:
            home = self._homes[name] = sftp.normalize(".")
        return home

    def _remote_paths(self, job: Job, state: _RemoteState, sftp) -> remote.RemoteJobPaths:
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
            workingdir=wd, script=script, jid=job.jid, attempt=job.attempt, stem=stem
        )

    def _prepare(
        self, job: Job, state: _RemoteState, runtime: dict, env_text: str = ""
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
            _replace(sftp, tmp, paths.config)
            if env_text:  # readable by the job's user only, before a byte of it is written
                tmp = posixpath.join(paths.jobs_dir, f".{job.jid}.env.{uuid.uuid4().hex[:8]}.upload")
                with sftp.open(tmp, "wb") as f:
                    f.chmod(0o600)
                    f.write(env_text.encode("utf-8"))
                _replace(sftp, tmp, paths.env)
        state.paths = paths
        return paths

    def _drop_env_file(self, state: _RemoteState, paths: remote.RemoteJobPaths, body_args: dict) -> None:
        """A job stopped before it started leaves no copy of its environment on the node."""
        if not body_args.get("env_text"):
            return
        try:
            sftp, lock = self._sftp_client(state.pool, state.name, state)
            with lock:
                sftp.remove(paths.env)
        except Exception:  # best effort: the file is the user's own, mode 0600
            log.debug("could not remove %s on %s", paths.env, state.name, exc_info=True)

    def _ensure_script(
        self, job: Job, sftp, paths: remote.RemoteJobPaths, label: str, overwrite: bool
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
        _replace(sftp, tmp, paths.script)

    # -- synchronous ------------------------------------------------------------------------

    def _run_sync(self, job: Job, state: _RemoteState, runtime: dict, body_args: dict, logf) -> None:
        pool, name = state.pool, state.name
        label = pool.label(name)
        paths = self._prepare(job, state, runtime, body_args["env_text"])
        if self._stopped(job):
            self._drop_env_file(state, paths, body_args)
            return
        body = _job_body(paths, body_args)
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

    def _run_async(self, job: Job, state: _RemoteState, runtime: dict, body_args: dict, logf) -> None:
        pool, name = state.pool, state.name
        label = pool.label(name)
        if state.pgid is None and state.paths is not None:  # a launch whose answer was lost
            pgid = self._read_remote_int(state, state.paths.pid)
            if pgid:  # it did start: follow it rather than run it twice
                state.pgid, state.started = pgid, time.monotonic()
        if state.pgid is None:  # not launched yet (a retry after a failed launch launches again)
            paths = self._prepare(job, state, runtime, body_args["env_text"])
            if self._stopped(job):
                self._drop_env_file(state, paths, body_args)
                return
            body = _job_body(paths, body_args)
            try:
                code, out, err = pool.run(name, remote.async_command(paths, body), timeout=LAUNCH_TIMEOUT)
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
                    self._drop_sftp(state.pool, state.name, state.sftp)
                if stopping or self._closing.is_set():
                    return
                state.failures += 1
                message = f"lost the connection to {label}: {describe_error(exc)}"
                if state.failures > self.max_retries:
                    job.error = (
                        f"{message} — gave up after {self.max_retries} retries "
                        f"{self.reconn_wait_time:g} s apart; job {job.jid} may still run there"
                    )
                    _log_line(logf, f"[aup] {job.error}")
                    return
                _log_line(
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
                _log_line(logf, f"[aup] {job.error}")
                self._kill_remote(job, state)
                return

    def _poll_async(self, job: Job, state: _RemoteState, logf) -> int | None:
        """New output since the last poll, and the exit status once the job has ended."""
        sftp, lock = self._sftp_client(state.pool, state.name, state)
        paths = state.paths
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

    # -- stopping -------------------------------------------------------------------------------

    def kill(self, job: Job) -> None:
        """Kill the job's process group on the node (TERM, then KILL), in the background."""
        with self._lock:
            state = self._states.get(job.jid)
            if state is None:
                return
            state.stop_requested.set()  # wakes a job waiting to reconnect
            if state.pgid is None or state.kill_started:
                return  # not started on the node yet: it checks for the stop before it starts
            state.kill_started = True
        threading.Thread(
            target=self._kill_remote, args=(job, state), name=f"aup-kill-{job.jid}", daemon=True
        ).start()

    def _kill_remote(self, job: Job, state: _RemoteState) -> None:
        try:
            code, out, err = state.pool.run(
                state.name, remote.kill_command(state.pgid, self.kill_grace), timeout=self.kill_grace + 15
            )
            state.kill_result = "alive" if "alive" in out else "gone"
            if state.kill_result == "alive":
                self._notice(
                    f"job {job.jid}: processes of group {state.pgid} survived SIGKILL on "
                    f"{state.pool.label(state.name)}",
                    "warning",
                )
        except Exception as exc:
            state.kill_result = f"error: {describe_error(exc)}"
            self._notice(
                f"could not stop job {job.jid} on {state.pool.label(state.name)}: {describe_error(exc)}",
                "warning",
            )
        finally:
            state.killed.set()

    def _read_remote_int(self, state: _RemoteState, path: str) -> int | None:
        """The number in a small file on the node, or None (missing, unreadable, no connection)."""
        try:
            sftp, lock = self._sftp_client(state.pool, state.name)
            with lock, sftp.open(path, "rb") as f:
                text = f.read(32).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else None
        except Exception:
            return None

    def _kill_leftover(self, state: _RemoteState) -> None:
        """After a lost connection, end what is left of the previous run before running it again."""
        pgid = state.pgid
        if pgid is None and state.paths is not None:
            pgid = self._read_remote_int(state, state.paths.pid)
        if pgid:
            try:
                state.pool.run(state.name, remote.kill_command(pgid, 0.2), timeout=10)
            except Exception:
                pass
        state.pgid = None

    def finish(self, maximize: bool = True, status: str = "FINISHED") -> list | None:  # type: ignore[override]
        """Wait for the jobs running on nodes (as Auptimizer's SSH manager does; `stop_job`,
        `stop_all` or the experiment's `stop` end them sooner), then, with `save_model`, re-run
        the best job on a node and download its models (`collect_models`); then close the
        connections. Returns `[jid, best score]` or None.

        Bounded where it can be: a job being stopped gets kill_grace + 10 s to end whatever its
        node does; then its channel is closed and what is left of it on the node killed."""
        try:
            self._wait_for_nodes()
            return super().finish(maximize=maximize, status=status)
        finally:
            self._closing.set()
            with self._lock:
                left = list(self._states.values())
            for st in left:  # whatever is still there (a re-run a stop let go): stop waiting for it
                if st.chan is not None:
                    _quiet(st.chan.close)
            for key in list(self._sftp):
                cached = self._sftp.pop(key, None)
                if cached is not None:
                    _quiet(cached[1].close)
            if self._own_pool:
                self.pool.close()

    def _wait_for_nodes(self) -> None:
        """Until no job runs on a node: those not stopped for as long as they run, a stopped one
        at most kill_grace + 10 s from when its stop was seen."""
        deadlines: dict[int, float] = {}
        while True:
            with self._lock:
                running = [(jid, st) for jid, st in self._states.items() if not st.released]
            if not running:
                return
            now = time.monotonic()
            for jid, st in running:
                if jid not in self._stop_reasons and not st.stop_requested.is_set():
                    continue
                if now < deadlines.setdefault(jid, now + self.kill_grace + 10):
                    continue
                st.released = True  # its node did not let it end: let it go
                if st.chan is not None:
                    _quiet(st.chan.close)
                if not st.kill_started and st.paths is not None:  # its group never came back to us
                    self._kill_leftover(st)
                st.killed.set()  # a job waiting for its kill (or polling, async) ends now
            waiting = [st for _, st in running if not st.released]
            if waiting:
                waiting[0].done.wait(0.05)

    # -- save_model -------------------------------------------------------------------------

    def collect_models(self, job: Job, rid: int) -> None:
        """Download what the best job's re-run saved on its node, `<workingdir>/aup_models/models_<eid>`
        there (every file, folders included), into `models_dir(job)` here, as Auptimizer does.
        Every SFTP request answers within start_timeout; a lost connection is retried
        `max_retries` times. Sets `job.error` (one sentence) when the models are not brought here."""
        paths = self._model_paths.pop(job.jid, None)
        name, label = self.names[rid], self.node_label(rid)
        local_dir = self.models_dir(job)
        if paths is None:
            job.error = f"the best job {job.jid} did not run on {label}; no models to download"
            return
        remote_dir = posixpath.join(paths.workingdir, "aup_models", f"models_{job.eid}")
        failures = 0
        while True:
            state = _RemoteState(name=name, pool=self.pool)
            try:
                sftp, lock = self._sftp_client(self.pool, name, state)
                with lock:
                    try:
                        st = sftp.stat(remote_dir)
                    except FileNotFoundError:
                        job.error = (
                            f"the best job {job.jid} saved no models on {label}: {remote_dir} is not "
                            "there (its script saves them when its config has save_model: true, "
                            "in aup_models/<folder_name> of its working folder)"
                        )
                        return
                    if not stat.S_ISDIR(st.st_mode or 0):
                        job.error = f"{remote_dir} on {label} is not a folder; no models downloaded"
                        return
                    count = _download_tree(sftp, remote_dir, local_dir)
                log.info(
                    "downloaded %d files of the best job's models from %s on %s to %s",
                    count,
                    remote_dir,
                    label,
                    local_dir,
                )
                return
            except _LocalWriteError as exc:
                job.error = (
                    f"cannot write the best job's models to {exc.path} ({exc.reason}): "
                    "make room there or make it writable"
                )
                return
            except Exception as exc:  # noqa: BLE001 -- each kind gets its sentence
                lost = (
                    isinstance(exc, (ConnectionLost, NodeUnreachableError, TimeoutError, EOFError))
                    or self._connection_broken(state)
                    or self._sftp_lost(state)
                )
                if isinstance(exc, TimeoutError):
                    self._drop_sftp(self.pool, name, state.sftp)
                failures += 1
                why = describe_error(exc) if not isinstance(exc, AupError) else str(exc)
                if not lost or failures > self.max_retries:
                    job.error = f"cannot download the models in {remote_dir} from {label}: {why}"
                    return
                log.warning(
                    "downloading the models from %s: %s; trying again in %g s",
                    label,
                    why,
                    self.reconn_wait_time,
                )
                time.sleep(self.reconn_wait_time)


# -- helpers ------------------------------------------------------------------------------------


def _job_body(paths: remote.RemoteJobPaths, body_args: dict) -> str:
    args = dict(body_args)
    env_text = args.pop("env_text", "")
    return remote.job_body(paths, **args, env_file=paths.env if env_text else None)


def _node_error_text(exc: BaseException) -> str:
    """A pool error's message (an unknown host key's names the options that accept it)."""
    return str(exc)


def _quiet(fn) -> None:
    try:
        fn()
    except Exception:
        pass


def _log_line(logf, text: str) -> None:
    try:
        logf.write((text + "\n").encode("utf-8"))
        logf.flush()
    except (OSError, ValueError):
        pass


def _makedirs(sftp, path: str, label: str) -> None:
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


class _LocalWriteError(AupError):
    """A downloaded file could not be written here."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _download_tree(sftp, remote_dir: str, local_dir: str, depth: int = 0) -> int:
    """Copy the node's folder `remote_dir` into `local_dir` (made as needed), recursively;
    returns how many files. A link to a file is copied as the file; a link to a folder is
    not followed (no loops). Each file lands whole (written aside, then renamed), so a node
    whose folder is this very folder (loopback, a shared file system) keeps its files."""
    entries = sftp.listdir_attr(remote_dir)
    try:
        os.makedirs(local_dir, exist_ok=True)
    except OSError as exc:
        raise _LocalWriteError(local_dir, exc.strerror or str(exc)) from None
    count = 0
    for entry in entries:
        name = entry.filename
        if name in (".", "..") or "/" in name or name.endswith(".aup-download"):
            continue
        src, dest = posixpath.join(remote_dir, name), os.path.join(local_dir, name)
        mode = entry.st_mode or 0
        if stat.S_ISLNK(mode):
            try:
                mode = sftp.stat(src).st_mode or 0
            except FileNotFoundError:  # a dangling link
                continue
            if stat.S_ISDIR(mode):
                continue
        if stat.S_ISDIR(mode):
            if depth < 32:
                count += _download_tree(sftp, src, dest, depth + 1)
        elif stat.S_ISREG(mode):
            tmp = os.path.join(local_dir, f".{name}.{uuid.uuid4().hex[:8]}.aup-download")
            try:
                try:
                    sftp.get(src, tmp)
                    os.replace(tmp, dest)
                except OSError as exc:
                    if getattr(exc, "filename", None) in (tmp, dest):  # here, not on the node
                        raise _LocalWriteError(dest, exc.strerror or str(exc)) from None
                    raise
            finally:
                try:
                    os.remove(tmp)
                except OSError:
                    pass
            count += 1
    return count


def _sftp_lost_text(label: str, exc: BaseException) -> str:
    return (
        f"the SFTP session to {label} was closed under this job (another job's request on it timed "
        f"out): {describe_error(exc)}"
    )


def _replace(sftp, tmp: str, dest: str) -> None:
    """Atomically move `tmp` over `dest` on the node."""
    try:
        sftp.posix_rename(tmp, dest)
    except OSError:
        try:
            sftp.remove(dest)
        except FileNotFoundError:
            pass
        sftp.rename(tmp, dest)
