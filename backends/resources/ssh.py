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

A node is named as everywhere else (`aup_tui_backends.ssh.hosts`): job records say `node:host[:port]`,
notices and job errors `host[:port]`; connection errors give its address `user@host:port`.
This module is the manager (nodes, availability, retries, stopping); one job's run on a node is
`node_jobs`, the save_model download `node_models`; the transport is `aup_tui_backends.ssh`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from .. import remote
from ..env_ini import HostSpec, load_env, parse_host
from ..errors import AupError, ConfigError
from ..events import Notice
from ..jobs import Job
from ..ssh import (
    ConnectionLost,
    NodeError,
    NodePool,
    NodeUnreachableError,
    describe_error,
    host_label,
    node_display_name,
    node_key,
)
from ..ssh.sftp import SFTPSessions
from ..store import TinyDBConnector
from .abstract import Callback
from .cpu import CPUResourceManager
from .node_jobs import JobWrapping, NodeJobRunner, NodeJobState, log_line
from .node_models import NodeModelDownload

log = logging.getLogger(__name__)
START_TIMEOUT = 30.0  # default seconds for a sync job's command to answer on its channel


class _LocalJobsError(AupError):
    """The local `jobs/` folder beside the script cannot be made."""


class SSHResourceManager(NodeJobRunner, NodeModelDownload, CPUResourceManager):  # parts first: they override
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
        connector: TinyDBConnector,
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
        self._states: dict[int, NodeJobState] = {}
        self._sftp = SFTPSessions(self.start_timeout)  # one shared SFTP client per node
        self._ready: set[tuple[str, str, str]] = (
            set()
        )  # (name, what, path) done on this node: folders made, script checked
        self._homes: dict[str, str] = {}
        self._rechecks: dict[str, float] = {}  # node → when it was last tried again (no monitor)
        self._rechecking: set[str] = set()
        self._broken: dict[str, str] = {}  # node → why it cannot be used until a person fixes it
        self._all_down_since: float | None = None
        self._down_noticed: set[str] = set()
        self._closing = threading.Event()
        self._model_paths: dict[int, remote.RemoteJobPaths] = {}  # save_model re-run's files on the node
        self.names: dict[int, str] = {}  # rid → node key in the pool (`node 4`)
        self.specs: dict[int, HostSpec] = {}
        self.display_names: dict[int, str] = {}  # rid → the node's name as a person reads it
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
            self.display_names[rid] = node_display_name(parse_host(mapping[rid]))  # as env.ini writes it
            self.pool.add_node(name, spec, self.display_names[rid])

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
        """The node's key in the pool: `node <rid>` (`aws <rid>`), as the TUI's monitor names it,
        so a shared pool/monitor and this manager mean the same node by the same key."""
        return node_key("aws" if self.key == "aws_mapping" else "node", rid)

    def _resolve_nodes(self, mapping: dict[int, str]) -> dict[int, tuple[str, HostSpec]]:
        """rid → (pool name, HostSpec)."""
        return {rid: (self.pool_name(rid), parse_host(value)) for rid, value in mapping.items()}

    def node_name(self, rid: int) -> str:
        return self.names[rid]

    def node_label(self, rid: int) -> str:
        """The node's address, `user@host:port` (for a resolved EC2 instance, the one it has now)."""
        return host_label(self.specs[rid])

    def display_name(self, rid: int) -> str:
        """The node's name as jobs' records, notices and logs give it: `host[:port]`
        (:func:`~aup_tui_backends.ssh.node_display_name`; an EC2 instance's id)."""
        return self.display_names[rid]

    def resource_name(self, rid: int) -> str:
        """`node:host[:port]` (`aws:…`) in job records: two nodes on one host are told apart."""
        kind = "aws" if self.key == "aws_mapping" else "node"
        return (
            f"{kind}:{self.display_names[rid]}" if rid in self.display_names else super().resource_name(rid)
        )

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
                        f"node {self.display_name(rid)} is down; it gets no new jobs until it is back"
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

    def _job_pool(self, name: str, rid: int) -> NodePool:
        """A pool of its own for one job (`reuse_connections` False), with the shared pool's options."""
        return NodePool(
            {name: self.specs[rid]},
            known_hosts=self.pool.known_hosts,
            accept_new_hosts=self.pool.accept_new_hosts,
            connect_timeout=self.pool.connect_timeout,
        )

    def run(self, job: Job, rid: int, exp_config: Any, call_back_func: Callback, **kwargs: Any) -> None:
        jid = self.ensure_jid(job)
        runtime = dict(getattr(exp_config, "runtime_args", None) or {})
        runtime.update(kwargs)
        name = self.names[rid]
        label = self.display_name(rid)
        pool = self.pool if self.reuse_connections else self._job_pool(name, rid)
        wd = getattr(exp_config, "remote_workingdir", None)
        if wd and not self.remote_workingdir:
            self.remote_workingdir = str(wd)
        elif not wd and job.save_model_flag:  # save_model's re-run: where the experiment's jobs ran
            wd = self.remote_workingdir
        state = NodeJobState(name=name, pool=pool, workingdir=str(wd) if wd else None)
        with self._lock:
            self._states[jid] = state
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
                        log_line(logf, f"[aup] stopping job {job.jid} on {label}: {state.kill_result}")
        except _LocalJobsError as exc:
            job.error = str(exc)
        except OSError as exc:
            job.error = job.error or f"cannot write the log {job.log_path()}: {exc.strerror or exc}"
        finally:
            if job.save_model_flag and state.paths is not None:
                self._model_paths[jid] = state.paths  # where collect_models finds its models
            with self._lock:
                self._states.pop(jid, None)
            state.killed.set()  # nothing of it runs any more: whoever waits for its end may go on
            state.done.set()
            self._update_job_counts()
            if pool is not self.pool:
                self._sftp.drop(pool, name)
                pool.close()
        call_back_func(job.results[-1][0] if job.results else None, jid)

    def _stopped(self, job: Job) -> bool:
        return job.jid in self._stop_reasons or self._closing.is_set()

    def _run_with_retries(
        self, job: Job, rid: int, label: str, state: NodeJobState, runtime: dict[str, Any], logf: BinaryIO
    ) -> None:
        try:
            job.write_config()  # the local record of the parameters
            # runtime_args.env goes to the node in a 0600 file, never on a command line (`ps`)
            env_text = remote.env_file_text(runtime.get("env"))  # a bad name or value fails here, once
            wrapping = JobWrapping(
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
                    self._run_async(job, state, runtime, wrapping, logf)
                else:
                    self._run_sync(job, state, runtime, wrapping, logf)
                return
            except ConnectionLost as exc:
                message = str(exc)
            except TimeoutError:  # an SFTP answer that did not come within start_timeout
                self._sftp.drop(state.pool, state.name, state.sftp)
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
                log_line(logf, f"[aup] {job.error}")
                return
            log_line(
                logf,
                f"[aup] {message}; retrying in {self.reconn_wait_time:g} s "
                f"({failures} of {self.max_retries})",
            )
            if state.stop_requested.wait(self.reconn_wait_time):
                return
            if not self.async_run:
                self._kill_leftover(state)

    def _connection_broken(self, state: NodeJobState) -> bool:
        try:
            return not state.pool.is_connected(state.name)
        except NodeError:
            return True

    def _sftp_lost(self, state: NodeJobState) -> bool:
        """The shared SFTP client this attempt used was closed under it (another job's request
        on it timed out, which drops it): the attempt is retried like a lost connection."""
        sftp = state.sftp
        if sftp is None:
            return False
        return not self._sftp.is_current(state.pool, state.name, sftp)

    # -- stopping -------------------------------------------------------------------------------

    def kill(self, job: Job) -> None:
        """Kill the job's process group on the node (TERM, then KILL), in the background."""
        with self._lock:
            state = self._states.get(job.jid) if job.jid is not None else None
            if state is None:
                return
            state.stop_requested.set()  # wakes a job waiting to reconnect
            if state.pgid is None or state.kill_started:
                return  # not started on the node yet: it checks for the stop before it starts
            state.kill_started = True
        threading.Thread(
            target=self._kill_remote, args=(job, state), name=f"aup-kill-{job.jid}", daemon=True
        ).start()

    def _kill_remote(self, job: Job, state: NodeJobState) -> None:
        pgid = state.pgid
        try:
            if pgid is None:  # `kill` starts this only once the job's process group is known
                raise RuntimeError("its process group on the node is not known")
            _, out, _ = state.pool.run(
                state.name, remote.kill_command(pgid, self.kill_grace), timeout=self.kill_grace + 15
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

    def _read_remote_int(self, state: NodeJobState, path: str) -> int | None:
        """The number in a small file on the node, or None (missing, unreadable, no connection)."""
        try:
            sftp, lock = self._sftp_client(state.pool, state.name)
            with lock, sftp.open(path, "rb") as f:
                text = f.read(32).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else None
        except Exception:
            return None

    def _kill_leftover(self, state: NodeJobState) -> None:
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

    def finish(  # type: ignore[override]  # the CPU managers' order (maximize first), as CPUResourceManager
        self, maximize: bool = True, status: str = "FINISHED"
    ) -> list[int | float] | None:
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
            self._sftp.close()
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


# -- helpers ------------------------------------------------------------------------------------


def _node_error_text(exc: BaseException) -> str:
    """A pool error's message (an unknown host key's names the options that accept it)."""
    return str(exc)


def _quiet(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:
        pass


def _sftp_lost_text(label: str, exc: BaseException) -> str:
    return (
        f"the SFTP session to {label} was closed under this job (another job's request on it timed "
        f"out): {describe_error(exc)}"
    )
