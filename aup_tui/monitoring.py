"""The live monitors for the app: local GPUs (NVML), SSH nodes and a Ray experiment's cluster
(:class:`~aup_tui_backends.monitors.ray_cluster.RayClusterMonitor`), without blocking the UI.

:class:`Monitoring` owns a :class:`~aup_tui_backends.monitors.GPUMonitor` and, when env.ini lists nodes
(``node_mapping``, ``aws_mapping``), a :class:`~aup_tui_backends.monitors.NodePool` and
:class:`~aup_tui_backends.monitors.NodeMonitor`.  The monitors sample on their own threads; each result
is posted as a Textual message — :class:`GPUSampled` or :class:`NodesProbed` — to every
subscribed widget or screen (``post_message`` is thread-safe).  Building the monitors reads
env.ini, so :meth:`Monitoring.start_async` does it on a thread too.

Which of our jobs run where comes from ``jobs_source``, a callable run on the GPU monitor's
thread after each sample: it returns the running jobs (``JobProcessInfo``: process-group leader
and cards) and how many run on each node.  :func:`jobs_from_experiment` builds one for an
experiment this process runs; :class:`StateJobs` one for an experiment another process runs
(``aup-tui watch``), from the dashboard's state and the pids the store records.

Tests and screenshots inject monitors (fake NVML, fixed clock) or use :class:`StaticMonitoring`,
which posts fixed data.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aup_tui_backends.monitors.gpu import GPUMonitor, GPUSnapshot, JobProcessInfo
from aup_tui_backends.monitors.job_evidence import JobEvidence, node_of_resource
from aup_tui_backends.monitors.nodes import NodeMonitor, NodeStatus
from aup_tui_backends.monitors.ray_cluster import RayClusterMonitor
from aup_tui_backends.ssh import NodePool, node_key
from aup_tui_backends.status import ExperimentStatus, JobStatus
from textual.message import Message

log = logging.getLogger(__name__)

__all__ = [
    "GPUSampled",
    "JobsInfo",
    "Monitoring",
    "NodesProbed",
    "StateJobs",
    "StaticMonitoring",
    "jobs_from_experiment",
    "monitoring_for",
    "nodes_from_env",
]

#: how long the monitors wait for an SSH/AWS experiment's manager, to share its node pool
MANAGER_WAIT = 30.0

#: (running jobs for the GPU monitor, node name → number of our jobs on it)
JobsInfo = tuple[Iterable[JobProcessInfo], Mapping[str, int]]


class GPUSampled(Message):
    """A new sample of the local GPUs."""

    def __init__(self, snapshot: GPUSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


GPUSampled.handler_name = "on_gpu_sampled"  # Textual would derive "on_gpusampled"


class NodesProbed(Message):
    """New statuses of the SSH nodes (node name → NodeStatus)."""

    def __init__(self, statuses: dict[str, NodeStatus]) -> None:
        super().__init__()
        self.statuses = statuses


def nodes_from_env(auppath: str) -> dict[str, Any]:
    """key ("node 4", "aws 5") → HostSpec for every probe-able host of env.ini (does file I/O):
    the engine's one reading of env.ini (:func:`~aup_tui_backends.ssh.hosts.env_host_specs`),
    as ``aup-tui resources --probe`` reads it. An unresolved EC2 instance id is left out."""
    from aup_tui_backends.config import load_env
    from aup_tui_backends.ssh.hosts import env_host_specs

    return env_host_specs(load_env(auppath))


def _jobs_info(running: Iterable[tuple[int, str, int | None, int, str | None]]) -> JobsInfo:
    """What the monitors need from running jobs given as (jid, resource kind, rid, pid, card):
    SSH/AWS jobs counted per node, local ones with their pid and card."""
    infos: list[JobProcessInfo] = []
    counts: dict[str, int] = {}
    for jid, kind, rid, pid, card in running:
        if kind in ("node", "aws") and rid is not None:
            name = node_key(kind, rid)
            counts[name] = counts.get(name, 0) + 1
        elif pid or card is not None:
            infos.append(JobProcessInfo(jid, pid, (card,) if card is not None else ()))
    return infos, counts


def jobs_from_experiment(experiment: Any) -> Callable[[], JobsInfo]:
    """A ``jobs_source`` reading the running jobs of an Experiment this process runs.

    Local jobs (cpu/gpu managers): the job's pid is its process-group leader
    (``LocalProcessManager.job_pids()``), its card the ``gpu_mapping`` value of its resource.
    SSH/AWS jobs: counted per node.  Reads in-memory state only (no I/O).
    """

    def source() -> JobsInfo:
        rm = getattr(experiment, "resource_manager", None)
        if rm is None:
            return (), {}
        pids_of = getattr(rm, "job_pids", None)
        pids: dict[int, int] = pids_of() if pids_of is not None else {}
        mapping: dict[int, str] = getattr(rm, "mapping", None) or {}
        with rm._lock:
            jobs = [j for j in rm.jobs.values() if j.status == JobStatus.RUNNING]
        kind = getattr(rm, "rtype", "")
        if kind in ("node", "aws"):
            kind = "aws" if getattr(rm, "key", "") == "aws_mapping" else "node"
        return _jobs_info(
            (
                job.jid,
                kind,
                job.rid,
                pids.get(job.jid, 0),
                mapping.get(job.rid) if job.rid is not None else None,
            )
            for job in jobs
        )

    return source


class StateJobs:
    """A ``jobs_source`` for an experiment another process runs (watch mode): the dashboard's
    :class:`~aup_tui.state.ExperimentState`, which the store polls keep current.

    A job's card is its resource's ``gpu_mapping`` value (env.ini, read once on the monitor's
    thread); its pid the one the store recorded, trusted only when the experiment runs on this
    machine (a store shared over NFS would otherwise match unrelated local processes).
    """

    def __init__(self, state: Any, auppath: str) -> None:
        self.state = state
        self.auppath = auppath
        self.this_host = socket.gethostname()
        self._cards: dict[int, str] | None = None
        self._progress: dict[int, tuple[str, int, float | None]] = {}  # jid → (status, results, end)

    def progressed_nodes(self) -> list[str]:
        """The nodes where a job reported a result or finished since the last call: evidence
        that they work (:meth:`~aup_tui_backends.monitors.NodeMonitor.note_alive`)."""
        nodes = []
        for row in list(self.state.jobs.values()):
            name = node_of_resource(row.resource, row.rid)
            if name is None:
                continue
            now = (str(row.status), row.results, row.end)
            before = self._progress.get(row.jid)
            self._progress[row.jid] = now
            if before is None or now == before:
                continue
            if now[1] > before[1] or now[0] == JobStatus.FINISHED:
                nodes.append(name)
        return nodes

    def _gpu_cards(self) -> dict[int, str]:
        if self._cards is None:
            from aup_tui_backends.config import load_env

            try:
                self._cards = {
                    int(rid): str(card) for rid, card in load_env(self.auppath).gpu_mapping.items()
                }
            except Exception:  # a bad env.ini: no cards; the panels say why elsewhere
                self._cards = {}
        return self._cards

    def __call__(self) -> JobsInfo:
        cards = self._gpu_cards()
        local = self.state.host in ("", self.this_host)
        running = []
        for row in list(self.state.jobs.values()):  # one C-level copy: safe against the UI thread
            if row.status == JobStatus.RUNNING and row.rid is not None:
                kind = row.resource.partition(":")[0]
                running.append(
                    (
                        row.jid,
                        kind,
                        row.rid,
                        row.pid if local and row.pid else 0,
                        cards.get(row.rid) if kind == "gpu" else None,
                    )
                )
        return _jobs_info(running)


class Monitoring:
    """Runs the GPU and node monitors and posts their results to subscribers.

    ``gpu``/``nodes`` are ready monitors (tests inject them: fake NVML, fixed clock); without
    them :meth:`start_async` builds them from ``auppath`` (env.ini) on a thread.
    """

    def __init__(
        self,
        gpu: GPUMonitor | None = None,
        nodes: NodeMonitor | None = None,
        *,
        auppath: str | None = None,
        nvml: Any = None,
        gpu_interval: float = 1.0,
        node_interval: float = 5.0,
        jobs_source: Callable[[], JobsInfo] | None = None,
        clock: Callable[[], float] = time.time,
        known_hosts: str | None = None,
        accept_new_hosts: bool = False,
        experiment: Any = None,
    ) -> None:
        self.gpu = gpu
        self.nodes = nodes
        self.auppath = auppath
        self.nvml = nvml
        self.gpu_interval = gpu_interval
        self.node_interval = node_interval
        self.jobs_source = jobs_source
        self.clock = clock
        self.known_hosts = known_hosts
        self.accept_new_hosts = accept_new_hosts
        self.experiment = experiment  # an SSH/AWS experiment this process runs: its node pool is shared
        self.error = ""  # why the nodes could not be monitored (a bad env.ini), shown by the panel
        self.last_snapshot: GPUSnapshot | None = None
        self.last_statuses: dict[str, NodeStatus] | None = None
        self._subscribers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False
        self._own_pool: NodePool | None = None
        self._shared_pool: NodePool | None = None  # the experiment's manager's
        self._start_thread: threading.Thread | None = None
        self._stop_evidence: Callable[[], None] | None = None
        self.ray: RayClusterMonitor | None = None  # a Ray experiment this process runs: its cluster

    # -- subscribers (widgets or screens; called on the UI thread) ---------------------------

    def subscribe(self, target: Any) -> None:
        """Post every new result to ``target``; the latest ones at once."""
        with self._lock:
            self._subscribers.add(target)
            snap, statuses = self.last_snapshot, self.last_statuses
        if snap is not None:
            target.post_message(GPUSampled(snap))
        if statuses is not None:
            target.post_message(NodesProbed(statuses))

    def unsubscribe(self, target: Any) -> None:
        with self._lock:
            self._subscribers.discard(target)

    def _post(self, make: Callable[[], Message]) -> None:
        with self._lock:
            targets = list(self._subscribers)
        for target in targets:
            try:
                target.post_message(make())
            except Exception:  # a closed app or screen: nothing to tell
                log.debug("could not post to %r", target, exc_info=True)

    # -- life cycle ------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._started

    def start(self) -> None:
        """Build what is missing (reads env.ini) and start the monitors' threads. Blocking: call it
        from a thread, or use :meth:`start_async` on the UI thread."""
        if self._started or self._stopped:
            return
        self._started = True
        if self.gpu is None:
            self.gpu = GPUMonitor(nvml=self.nvml, interval=self.gpu_interval)
        self._refresh_jobs()  # the first sample already knows our jobs
        self.gpu.start(self._on_gpu)  # first: the nodes may wait for the experiment's manager
        if self.nodes is None and self.auppath:
            try:
                specs = nodes_from_env(self.auppath)
            except Exception as exc:  # a bad env.ini: the nodes panel says so, the rest works
                self.error = str(exc)
                specs = {}
            if specs:
                # probe timeouts follow the pool's: the manager's commands may take longer than ours
                pool = self._shared_pool = self._experiment_pool()
                if pool is None:
                    pool = self._own_pool = NodePool(
                        known_hosts=self.known_hosts,
                        accept_new_hosts=self.accept_new_hosts,
                        connect_timeout=5.0,
                        command_timeout=10.0,
                    )
                for name, spec in specs.items():
                    pool.add_node(name, spec)  # the same name and spec as the manager's: a no-op there
                self.nodes = NodeMonitor(pool, interval=self.node_interval, clock=self.clock)
        if self.nodes is None:
            self.ray = self._ray_monitor()
        if self._stopped:  # the app closed while this waited for the manager
            return
        self._refresh_jobs()
        bus = getattr(self.experiment, "bus", None)
        if self.nodes is not None and bus is not None:  # our jobs' progress shows which nodes work
            self._stop_evidence = JobEvidence(self.nodes).attach(bus)
        if self.nodes is not None:
            self._on_nodes(self.nodes.statuses())  # UNKNOWN rows at once, before the first probe
            self.nodes.start(self._on_nodes)
        elif self.ray is not None:
            self.ray.start(self._on_nodes)
        else:
            self._on_nodes({})

    def _experiment_pool(self) -> NodePool | None:
        """The node pool of the SSH/AWS manager of the experiment this process runs, once it exists.

        Probing over the manager's connections means one connection per node, the experiment's
        known_hosts and options, and a node a probe finds down is down for the manager at once.
        """
        exp = self.experiment
        if exp is None or getattr(getattr(exp, "config", None), "resource", None) not in ("node", "aws"):
            return None
        deadline = time.monotonic() + MANAGER_WAIT
        while not exp.started.wait(0.1):  # the manager is built when the experiment starts
            if self._stopped or not ExperimentStatus(exp.status).is_live or time.monotonic() > deadline:
                return None
        pool = getattr(exp.resource_manager, "pool", None)
        return pool if isinstance(pool, NodePool) else None

    def _ray_monitor(self) -> RayClusterMonitor | None:
        """For a Ray experiment this process runs: its cluster's nodes, sampled from Ray's state
        once its manager has connected (Ray is imported only then, on the monitor's thread)."""
        exp = self.experiment
        if exp is None and self.auppath:  # watching: the cluster env.ini names, if Ray is here
            return _watched_ray_cluster(self.auppath, self.node_interval, self.clock)
        if exp is None or getattr(getattr(exp, "config", None), "resource", None) != "ray":
            return None
        deadline = time.monotonic() + MANAGER_WAIT
        while not exp.started.wait(0.1):  # the manager connects to Ray when the experiment starts
            if self._stopped or not ExperimentStatus(exp.status).is_live or time.monotonic() > deadline:
                return None
        jobs = getattr(exp.resource_manager, "jobs_per_node", None)
        return RayClusterMonitor(interval=self.node_interval, jobs_source=jobs, clock=self.clock)

    def start_async(self) -> threading.Thread:
        """:meth:`start` on a daemon thread (never blocks the caller)."""
        thread = self._start_thread = threading.Thread(
            target=self._start_quietly, name="aup-monitoring-start", daemon=True
        )
        thread.start()
        return thread

    def _start_quietly(self) -> None:
        try:
            self.start()
        except Exception:
            log.exception("could not start the monitors")

    def stop(self) -> None:
        """Stop the monitors (and close NVML and the connections this object opened)."""
        self._stopped = True
        starting = self._start_thread
        if starting is not None and starting is not threading.current_thread():
            starting.join(2.0)
        if self.gpu is not None:
            try:
                self.gpu.close() if self._started else self.gpu.stop()
            except Exception:
                log.debug("GPU monitor stop failed", exc_info=True)
        if self._stop_evidence is not None:
            self._stop_evidence()
        if self.nodes is not None:
            self.nodes.stop(timeout=2.0)
        if self.ray is not None:
            self.ray.stop(timeout=2.0)
        if self._own_pool is not None:
            self._own_pool.close()
        # a shared pool is the manager's to close (an experiment kept running after the app quits
        # still uses it), except for connections our probes reopened after the experiment ended
        if (
            self._shared_pool is not None
            and getattr(self.experiment, "status", "") != ExperimentStatus.RUNNING
        ):
            self._shared_pool.close()

    def retry(self, name: str | None = None) -> None:
        """Probe a node (all by default) now, ignoring its backoff."""
        if self.nodes is not None:
            self.nodes.retry(name)
        if self.ray is not None:
            self.ray.retry(name)

    # -- monitor callbacks (monitor threads) -------------------------------------------------

    def _refresh_jobs(self) -> None:
        if self.jobs_source is None:
            return
        try:
            jobs, counts = self.jobs_source()
        except Exception:
            log.debug("jobs_source failed", exc_info=True)
            return
        if self.gpu is not None:
            self.gpu.set_jobs(list(jobs))
        if self.nodes is not None:
            self.nodes.set_job_counts(counts)
            progressed = getattr(self.jobs_source, "progressed_nodes", None)
            for name in progressed() if progressed is not None else ():
                self.nodes.note_alive(name)

    def _on_gpu(self, snapshot: GPUSnapshot) -> None:
        last, self.last_snapshot = self.last_snapshot, snapshot
        # still no GPUs, for the same reason: nothing new to show (an idle app stays idle)
        if last is None or last.available or snapshot.available or last.reason != snapshot.reason:
            self._post(lambda: GPUSampled(snapshot))
        self._refresh_jobs()  # for the next sample

    def _on_nodes(self, statuses: dict[str, NodeStatus]) -> None:
        self.last_statuses = statuses
        self._post(lambda: NodesProbed(statuses))


def _watched_ray_cluster(
    auppath: str, interval: float, clock: Callable[[], float]
) -> RayClusterMonitor | None:
    """For a dashboard of another process's run: a monitor of the Ray cluster env.ini's
    `ray_address` names (none for a local Ray, which lives and ends with its run), connecting on
    its own thread; None without Ray installed or without a cluster."""
    from aup_tui_backends.config import load_env
    from aup_tui_backends.optional import installed

    try:
        address = load_env(auppath).ray_address
    except Exception:  # a bad env.ini: the panel says so elsewhere
        return None
    if not address or not installed("ray"):
        return None

    def connect() -> None:
        from aup_tui_backends.resources.ray import connect as connect_ray

        connect_ray(address)

    return RayClusterMonitor(interval=interval, clock=clock, connect=connect)


class StaticMonitoring(Monitoring):
    """Fixed data for tests, demos and screenshots: posts ``snapshot`` and ``statuses`` once."""

    def __init__(
        self, snapshot: GPUSnapshot | None = None, statuses: dict[str, NodeStatus] | None = None
    ) -> None:
        super().__init__()
        self.last_snapshot = snapshot
        self.last_statuses = statuses
        self.retried: list[str | None] = []

    def start(self) -> None:
        self._started = True

    def start_async(self) -> threading.Thread:
        self.start()
        thread = threading.Thread(target=lambda: None)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stopped = True

    def retry(self, name: str | None = None) -> None:
        self.retried.append(name)

    def push(
        self, snapshot: GPUSnapshot | None = None, statuses: dict[str, NodeStatus] | None = None
    ) -> None:
        """New data, posted as the real monitors would (any thread)."""
        if snapshot is not None:
            self._on_gpu(snapshot)
        if statuses is not None:
            self._on_nodes(statuses)


def monitoring_for(screen: Any) -> Monitoring | None:
    """The app's Monitoring, subscribed to by ``screen`` (a dashboard); started on first use.

    An app given a ``monitoring`` (tests, screenshots) uses it; a demo app (fixed state, no
    store) gets none; otherwise one is built from the app's ``.aup`` (env.ini) and, for an
    experiment this process runs, told where its jobs run; for one another process runs, the
    dashboard's state tells it (:class:`StateJobs`).
    """
    app = screen.app
    mon = getattr(app, "monitoring", None)
    if mon is None:
        if getattr(app, "demo_state", None) is not None or not getattr(app, "auppath", None):
            return None
        if getattr(screen, "source", None) is None and getattr(screen, "connector", None) is None:
            return None
        experiment = getattr(app, "experiment", None)
        mon = Monitoring(
            auppath=app.auppath,
            experiment=experiment,
            jobs_source=jobs_from_experiment(experiment) if experiment is not None else None,
        )
        try:
            app.monitoring = mon
        except Exception:
            return None
    state = getattr(screen, "state", None)
    if (
        getattr(app, "experiment", None) is None
        and state is not None
        and getattr(app, "auppath", None)
        and (mon.jobs_source is None or isinstance(mon.jobs_source, StateJobs))
    ):
        mon.jobs_source = StateJobs(state, app.auppath)  # the experiment of the dashboard opened last
    mon.subscribe(screen)
    if not mon.started:
        mon.start_async()
    return mon
