"""Jobs as Ray tasks (`resource: "ray"`), on a Ray cluster or on a Ray started for the run.

env.ini's `ray_address` says which Ray (`aup-tui init --ray [ADDRESS]`): an address
(`host:port`, `ray://…`), `auto` (the cluster this machine belongs to), or empty: a local Ray
started for this run and shut down at its end (`ray.shutdown()`; never `ray stop`, which ends
every Ray process on the machine). env.ini's `n_ray` is how many jobs may be in Ray at once
(registered slots, as `n_cpu`); `n_parallel` caps that as everywhere.

A job is a generator task (:func:`.ray_task.run_job`) that Ray places on a node with
`num_cpus` (default 1), `num_gpus` (default 0; Ray sets the job's `CUDA_VISIBLE_DEVICES`),
`resources` and `runtime_env` free. The script and its config travel as bytes with the task;
the job runs in a process group of its own and its output comes back line by line as it is
written, so intermediate results reach the store live; its log is kept here in `jobs/`.

Stopping a job kills its process group on its node (a task pinned there), then
`ray.cancel(force=True)`; it is recorded STOPPED whatever Ray reports. A job whose node or
worker is lost runs again from the start, up to `max_retries` times (default 3), as an SSH job.

Ray is the optional extra `aup-tui[ray]`; this module is imported only for a Ray experiment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TextIO

import ray
import ray.exceptions as rex
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..env_ini import load_env
from ..errors import AupError, ConfigError
from ..events import Notice
from ..jobs import Job, env_strings
from ..remote import LOCAL_WRAPPER
from ..store import TinyDBConnector
from . import ray_task
from .abstract import AbstractResourceManager, Callback

log = logging.getLogger(__name__)

__all__ = ["RayResourceManager", "connect"]

#: failures of the node or worker under a job, not of the job: the job runs again
LOST = (
    rex.NodeDiedError,
    rex.WorkerCrashedError,
    rex.LocalRayletDiedError,
    rex.ObjectLostError,
    rex.OwnerDiedError,
    rex.RaySystemError,
)
KILL_TIMEOUT = 30.0  # seconds to wait for the kill on the job's node


@dataclass
class RayJob:
    """One running attempt: its generator, and where its process group is once it started."""

    gen: Any
    node_id: str | None = None
    node_ip: str | None = None
    pgid: int | None = None
    kill_started: bool = False
    kill_result: str | None = None
    killed: threading.Event = field(default_factory=threading.Event)


class _NodeLost(Exception):
    """The node or worker under the job went away."""


_connect_lock = threading.Lock()


def connect(address: str | None) -> bool:
    """Connect this process to Ray at `address` (None or "": start a local Ray); True when this
    call did it (then `ray.shutdown()` is ours to call), False when Ray was up already here.

    The driver's output stays ours: workers' output is not copied to this terminal."""
    with _connect_lock:
        if ray.is_initialized():
            return False
        by_value: Any = ray.cloudpickle.register_pickle_by_value  # untyped in Ray
        by_value(ray_task)  # the nodes need no aup-tui
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
        if address:
            _check_reachable(address)
        try:
            with _real_std_streams():
                if address:
                    ray.init(address=address, **options)
                else:
                    ray.init(include_dashboard=False, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"connect to the Ray cluster at {address}" if address else "start a local Ray"
            hint = (
                "start it (`ray start --head`) or fix ray_address in env.ini (`aup-tui init --overwrite --ray ADDRESS`)"
                if address
                else "see Ray's logs in /tmp/ray"
            )
            raise ConfigError(f"cannot {where}: {' '.join(str(exc).split())[:300]} — {hint}") from None
        return True


CONNECT_TIMEOUT = 5.0  # s for the cluster's head to accept a connection


def _check_reachable(address: str) -> None:
    """Refuse at once a `host:port` nobody listens on (`ray.init` would retry it for minutes)."""
    if address == "auto" or "://" in address:
        return  # Ray finds the local cluster itself; Ray Client has its own timeout
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"ray_address {address!r} in env.ini is not host:port, auto or ray://host:port — "
            "fix it with `aup-tui init --overwrite --ray ADDRESS`"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}): start it "
            "(`ray start --head`) or fix ray_address in env.ini (`aup-tui init --overwrite --ray ADDRESS`)"
        ) from None


_devnull: list[TextIO] = []


@contextlib.contextmanager
def _real_std_streams() -> Iterator[None]:
    """`ray.init` hands sys.stderr to faulthandler, which needs a real file: under the TUI (whose
    capture has no file descriptor) the streams are a null device while it runs."""
    swapped = {}
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            ok = stream.fileno() >= 0
        except (AttributeError, OSError, ValueError):
            ok = False
        if not ok:
            if not _devnull:  # kept open: faulthandler keeps writing to it
                _devnull.append(open(os.devnull, "w"))  # noqa: SIM115
            swapped[name] = stream
            setattr(sys, name, _devnull[0])
    try:
        yield
    finally:
        for name, stream in swapped.items():
            setattr(sys, name, stream)


class RayResourceManager(AbstractResourceManager):
    """`RayResourceManager(connector, n_parallel, auppath='.aup', num_cpus=1, num_gpus=0,
    resources=None, runtime_env=None, max_retries=3, kill_grace=2, **kwargs)`."""

    rtype = "ray"

    def __init__(
        self,
        connector: TinyDBConnector,
        n_parallel: int,
        *args: Any,
        auppath: str = ".aup",
        num_cpus: float = 1,
        num_gpus: float = 0,
        resources: dict[str, float] | None = None,
        runtime_env: dict[str, Any] | None = None,
        max_retries: int = 3,
        kill_grace: float = 2.0,
        **kwargs: Any,
    ) -> None:
        address = kwargs.pop("ray_address", None)
        super().__init__(connector, n_parallel, *args, **kwargs)
        if address is None:
            address = load_env(auppath).ray_address
        self.address: str = str(address or "").strip()
        self.num_cpus = float(num_cpus)
        self.num_gpus = float(num_gpus)
        self.resources = {str(k): float(v) for k, v in (resources or {}).items()}
        self.runtime_env = dict(runtime_env or {})
        self.max_retries = max(0, int(max_retries))
        self.kill_grace = max(0.0, float(kill_grace))
        self._running: dict[int, RayJob] = {}
        self._scripts: dict[str, tuple[tuple[str, int, int], bytes]] = {}
        self._own_ray = connect(self.address)
        try:
            self._prepare_tasks()
        except BaseException:  # a local Ray started for nothing ends here
            self.shutdown()
            raise
        self._warn_if_no_node_fits()

    def _prepare_tasks(self) -> None:
        options: dict[str, Any] = {
            "num_returns": "streaming",
            "max_retries": 0,  # a lost node is retried here, where it is logged and counted
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
        }
        if self.resources:
            options["resources"] = self.resources
        if self.runtime_env:
            options["runtime_env"] = self.runtime_env
        self._task = ray.remote(**options)(ray_task.run_job)
        self._killer = ray.remote(num_cpus=0, max_retries=0)(ray_task.kill_group)

    def _warn_if_no_node_fits(self) -> None:
        """A job no node of the cluster can take waits in Ray without a word: say so once, at
        the start (an autoscaling cluster may still add such a node)."""
        need = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.resources}
        need = {k: v for k, v in need.items() if v > 0}
        try:
            list_nodes: Any = ray.nodes  # untyped in Ray
            nodes = [n.get("Resources") or {} for n in list_nodes() if n.get("Alive")]
        except Exception:  # noqa: BLE001 — only a warning
            log.debug("could not list Ray's nodes", exc_info=True)
            return
        if not need or any(all(r.get(k, 0) >= v for k, v in need.items()) for r in nodes):
            return
        wanted = ", ".join(f"{k} {v:g}" for k, v in need.items())
        message = (
            f"no node of the Ray cluster has {wanted} for a job (num_cpus, num_gpus, resources in "
            "resource_args): its jobs wait in Ray until such a node joins"
        )
        log.warning("%s", message)
        self.bus.publish(Notice(message=message, eid=self.eid, level="warning"))

    # -- what the monitors read -------------------------------------------------------------

    def jobs_per_node(self) -> dict[str, int]:
        """Ray node id → how many of this manager's jobs run there now (for the nodes panel)."""
        counts: dict[str, int] = {}
        with self._lock:
            for state in self._running.values():
                if state.node_id:
                    counts[state.node_id] = counts.get(state.node_id, 0) + 1
        return counts

    # -- running a job ------------------------------------------------------------------------

    def run(self, job: Job, rid: int, exp_config: Any, call_back_func: Callback, **kwargs: Any) -> None:
        """Run `job` as a Ray task to its end (blocking), then `call_back_func(score, jid)`."""
        jid = self.ensure_jid(job)
        job.error, job.results, job.prescript_status = None, [], None
        runtime = dict(getattr(exp_config, "runtime_args", None) or {})
        runtime.update(kwargs)
        try:
            env = {**env_strings(runtime.get("env")), "AUP_JOB_ID": str(jid)}
            if not self.num_gpus:  # as a CPU job: no card (Ray sets it for a job that asks for some)
                env["CUDA_VISIBLE_DEVICES"] = ""
            job.verify_local()
            script = self._script(job.script_path)
            job.write_config()  # the local copy, in jobs/ as for every resource
            config = json.dumps({**job.config, "job_id": jid}).encode()
            logf = open(job.log_path(), "wb", buffering=0)  # noqa: SIM115 -- unbuffered: followed live
        except AupError as exc:  # before OSError: a JobError is an EnvironmentError too
            job.error = str(exc)
            call_back_func(None, jid)
            return
        except OSError as exc:
            job.error = f"cannot read or write {exc.filename or job.log_path()}: {exc.strerror or exc}"
            call_back_func(None, jid)
            return
        pre, post = runtime.get("prescript"), runtime.get("postscript")
        wrapper = ["/bin/sh", "-c", LOCAL_WRAPPER, "aup-job", str(pre or ""), str(post or "")]
        args = (
            script,
            os.path.basename(job.script_path),
            config,
            os.path.basename(job.config_path),
            env,
            wrapper if pre or post else [],
            job.path,
            bool(self.runtime_env.get("working_dir")),
        )
        with logf:
            failures = 0
            while True:
                try:
                    self._run_once(job, args, logf)
                    break
                except _NodeLost as exc:
                    if jid in self._stop_reasons or self.stopping:
                        break
                    failures += 1
                    if failures > self.max_retries:
                        job.error = f"{exc} — gave up after {self.max_retries} retries"
                        _log_line(logf, f"[aup] {job.error}")
                        break
                    job.results = []
                    _log_line(logf, f"[aup] {exc}; running it again ({failures} of {self.max_retries})")
        call_back_func(job.results[-1][0] if job.results else None, jid)

    def _run_once(self, job: Job, args: tuple[Any, ...], logf: BinaryIO) -> None:
        jid = self.ensure_jid(job)
        state = RayJob(gen=self._task.remote(*args))
        with self._lock:
            self._running[jid] = state
        if jid in self._stop_reasons:  # stopped before its task was submitted
            self.kill(job)
        code: int | None = None
        last = ""
        try:
            for ref in state.gen:
                header, lines, exit_code, error = ray.get(ref)
                if header is not None:
                    state.node_id, state.node_ip, state.pgid = header[0], header[1], header[2]
                    gpus = ",".join(header[3]) or "none"
                    _log_line(
                        logf, f"[aup] job {jid} runs on Ray node {header[1]} ({header[0][:6]}), GPUs: {gpus}"
                    )
                    if jid in self._stop_reasons:
                        self.kill(job)
                if lines:
                    last = self.pump_output(job, lines, logf) or last
                if exit_code is not None:  # the last item: the task's own end is not waited for
                    code = int(exit_code)
                    break
                if error is not None:
                    job.error = str(error)
        except rex.TaskCancelledError:
            if jid not in self._stop_reasons:
                job.error = f"job {jid}'s Ray task was cancelled outside aup-tui"
        except LOST as exc:
            if jid not in self._stop_reasons:  # a forced cancel kills the worker: not a lost node
                where = f"Ray node {state.node_ip}" if state.node_ip else "its Ray node"
                raise _NodeLost(f"lost {where} ({type(exc).__name__})") from None
        except rex.RayError as exc:  # the runtime_env could not be set up, no node fits, …
            if jid not in self._stop_reasons:
                job.error = f"Ray could not run job {jid}: {_first_line(exc)}"
        finally:
            with self._lock:
                self._running.pop(jid, None)
            if state.kill_started:  # ends once its node said nothing of it is left
                state.killed.wait(self.kill_grace + KILL_TIMEOUT)
                if state.kill_result not in (None, "gone"):
                    _log_line(logf, f"[aup] stopping job {jid}: {state.kill_result}")
        if jid in self._stop_reasons or job.error or code is None:
            if code is None and not job.error and jid not in self._stop_reasons:
                job.error = f"job {jid}'s Ray task ended without an exit status"
            return
        if job.prescript_status is not None:
            job.error = (
                f"prescript exited with status {job.prescript_status} on Ray node {state.node_ip}; "
                f"{os.path.basename(job.script_path)} did not run; see {job.log_path()}"
            )
        elif code != 0:
            tail = f" (last output: {last!r})" if last else ""
            job.error = (
                f"{os.path.basename(job.script_path)} {_exit_text(code)} on Ray node "
                f"{state.node_ip}{tail}; see {job.log_path()}"
            )

    def _script(self, path: str) -> bytes:
        """The script's bytes, read again only when the file changed (every job ships them)."""
        st = os.stat(path)
        key = (path, st.st_mtime_ns, st.st_size)
        cached = self._scripts.get(path)
        if cached is None or cached[0] != key:
            with open(path, "rb") as f:
                cached = self._scripts[path] = (key, f.read())
        return cached[1]

    # -- stopping ---------------------------------------------------------------------------------

    def kill(self, job: Job) -> None:
        """Kill the job's process group on its node, then cancel its task (in the background)."""
        with self._lock:
            state = self._running.get(job.jid) if job.jid is not None else None
            if state is None:
                return
            if state.pgid is not None:
                if state.kill_started:
                    return
                state.kill_started = True
        threading.Thread(
            target=self._kill, args=(state,), name=f"aup-ray-kill-{job.jid}", daemon=True
        ).start()

    def _kill(self, state: RayJob) -> None:
        try:
            if state.pgid is not None and state.node_id is not None:
                strategy = NodeAffinitySchedulingStrategy(state.node_id, soft=False)
                ref = self._killer.options(scheduling_strategy=strategy).remote(state.pgid, self.kill_grace)
                try:
                    state.kill_result = str(ray.get(ref, timeout=self.kill_grace + KILL_TIMEOUT))
                except rex.GetTimeoutError:
                    state.kill_result = f"no answer from Ray node {state.node_ip} within {KILL_TIMEOUT:g} s"
                except rex.RayError as exc:  # the node is gone: so is the job
                    state.kill_result = f"could not reach Ray node {state.node_ip} ({type(exc).__name__})"
            try:
                ray.cancel(state.gen, force=True)
            except Exception:  # over already
                log.debug("ray.cancel failed", exc_info=True)
        finally:
            if state.pgid is not None:
                state.killed.set()

    def finish(self, status: str = "FINISHED", maximize: bool | None = None) -> list[int | float] | None:
        """Wait for the running jobs, then disconnect from Ray (a local Ray started for this run ends)."""
        try:
            return super().finish(status=status, maximize=maximize)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """`ray.shutdown()` when this manager connected: a Ray started for the run ends with it."""
        if self._own_ray:
            self._own_ray = False
            ray.shutdown()


def _log_line(logf: BinaryIO, text: str) -> None:
    try:
        logf.write((text + "\n").encode("utf-8"))
    except (OSError, ValueError):
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:300]


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
