"""The node monitor: each SSH node's health (UP / SLOW / DOWN), probed over the shared pool.

:class:`NodeMonitor` probes every node of a :class:`~aup_tui_backends.ssh.NodePool`
concurrently — reachability, the round trip of a no-op command, then load, memory and GPUs in
one remote command (:mod:`.probe`) — and keeps each node's state with the last error, since
when, and a short history of state changes.  A DOWN node is retried with capped exponential
backoff and comes back by itself.  The transport (connections, host keys, commands) is
:mod:`aup_tui_backends.ssh`'s; nothing here imports paramiko.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from aup_tui_backends.monitors.gpu import GPUStatus
from aup_tui_backends.monitors.probe import ProbeResult, parse_probe_output, probe_script
from aup_tui_backends.monitors.sampler import SamplerThread
from aup_tui_backends.ssh import NodeError, NodePool, NodeUnreachableError, describe_error

log = logging.getLogger(__name__)

__all__ = ["NodeMonitor", "NodeState", "NodeStatus", "StateChange"]


class NodeState(str, Enum):
    UNKNOWN = "UNKNOWN"  # not probed yet
    UP = "UP"
    SLOW = "SLOW"  # reachable, round trip over slow_rtt
    DOWN = "DOWN"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class StateChange:
    at: float  # monitor clock
    state: NodeState
    reason: str = ""


@dataclass(frozen=True)
class NodeStatus:
    """One node's health.  Times are from the monitor's clock; memory in bytes.

    ``name`` is the node's key in the pool (``node 4``), ``display_name`` what a
    person reads (``host[:port]``, :func:`~aup_tui_backends.ssh.node_display_name`;
    the key when not given), ``host`` its address.  ``error`` is the current error
    (only while DOWN), ``last_error`` the most recent one even after recovery.
    ``output`` is the raw output of the last probe command, for a node-detail view.
    """

    name: str
    host: str  # user@host:port
    state: NodeState = NodeState.UNKNOWN
    since: float = 0.0  # time of the last state change
    checked: float | None = None  # time of the last finished probe
    rtt: float | None = None  # seconds, round trip of a no-op command
    load: tuple[float, float, float] | None = None
    mem_total: int | None = None
    mem_available: int | None = None
    jobs: int = 0
    gpus: tuple[GPUStatus, ...] = ()
    gpu_error: str = ""  # nvidia-smi present but failing
    error: str = ""
    last_error: str = ""
    failures: int = 0  # consecutive failed probes
    next_probe: float | None = None
    history: tuple[StateChange, ...] = ()
    output: str = ""
    display_name: str = ""
    #: why the node counts as UP although no probe says so ("jobs running": :meth:`NodeMonitor.note_alive`)
    evidence: str = ""
    #: what is in use of the node's resources where its monitor knows (a Ray node: `CPU 1/2 GPU 0/0`)
    usage: str = ""

    def __post_init__(self) -> None:
        if not self.display_name:
            object.__setattr__(self, "display_name", self.name)

    @property
    def is_down(self) -> bool:
        return self.state is NodeState.DOWN

    @property
    def mem_used(self) -> int | None:
        if self.mem_total is None or self.mem_available is None:
            return None
        return self.mem_total - self.mem_available


class _Node:
    __slots__ = (
        "name",
        "state",
        "since",
        "checked",
        "error",
        "last_error",
        "failures",
        "next_due",
        "history",
        "gpu_history",
        "in_flight",
        "token",
        "status",
        "started",
        "alive",
        "alive_since",
    )

    def __init__(self, name: str, now: float, history: int):
        self.name = name
        self.state = NodeState.UNKNOWN
        self.since = now
        self.checked: float | None = None
        self.error = ""
        self.last_error = ""
        self.failures = 0
        self.next_due = now
        self.history: deque[StateChange] = deque(maxlen=history)
        self.gpu_history: dict[int, deque[float]] = {}
        self.in_flight = False
        self.token = 0
        self.status: NodeStatus | None = None
        self.started: float | None = None  # time.monotonic() when the running probe began
        self.alive: float | None = None  # the last time a job showed the node works (monitor clock)
        self.alive_since: float | None = None  # when that run of evidence began


class NodeMonitor:
    """Probes every node of a :class:`NodePool`, concurrently.

    ``nodes`` (name → HostSpec) are added to the pool; by default the
    monitor watches every node the pool has.  ``probe_once()`` probes all
    nodes now and returns their statuses; ``start(callback)`` probes on a
    background thread — each node every ``interval`` seconds after its
    previous probe finished, a DOWN node after a backoff doubling from
    ``interval`` up to ``max_backoff`` — and calls ``callback(statuses)``
    (name → :class:`NodeStatus`) after each round, from that thread.
    """

    def __init__(
        self,
        pool: NodePool,
        nodes: Mapping[str, Any] | None = None,
        interval: float = 5.0,
        slow_rtt: float = 0.5,
        max_backoff: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        history: int = 50,
        gpu_history: int = 60,
        probe_timeout: float | None = None,
    ):
        self.pool = pool
        for name, spec in (nodes or {}).items():
            pool.add_node(name, spec)
        self.interval = float(interval)
        self.slow_rtt = float(slow_rtt)
        self.max_backoff = float(max_backoff)
        self.clock = clock
        self.history_len = int(history)
        self.gpu_history_len = int(gpu_history)
        self._probe_timeout = probe_timeout
        self._lock = threading.Lock()
        self._nodes: dict[str, _Node] = {}
        self._job_counts: dict[str, int] = {}
        self._sampler = SamplerThread("aup-node-monitor")
        self._dirty = False
        self._sync_nodes()

    @property
    def probe_timeout(self) -> float:
        """How long one node's probe may take before it counts as DOWN."""
        if self._probe_timeout is not None:
            return float(self._probe_timeout)
        return self.pool.connect_timeout + 2 * self.pool.command_timeout + 1.0

    def _sync_nodes(self) -> None:
        names = list(self.pool.nodes())
        now = self.clock()
        with self._lock:
            for name in names:
                if name not in self._nodes:
                    self._nodes[name] = _Node(name, now, self.history_len)
            for name in list(self._nodes):
                if name not in names:
                    del self._nodes[name]

    # -- the manager's side -------------------------------------------------------
    def set_job_counts(self, counts: Mapping[str, int]) -> None:
        """How many of our jobs run on each node now (name → count); a change is reported at
        once, not with the next probe."""
        new = {str(k): int(v) for k, v in counts.items() if v}
        if new != self._job_counts:
            self._job_counts = new
            self._dirty = True
            self._sampler.wake()

    def note_alive(self, name: str, when: float | None = None) -> None:
        """A job on node ``name`` started, reported or finished at ``when`` (the monitor's clock,
        now by default): evidence that the node works, whatever the last probe said.

        Until a probe newer than the evidence fails, or for one ``interval`` after it, the node
        shows UP with ``evidence="jobs running"``; a DOWN node is probed again within an interval
        instead of after its backoff, so the probes catch up with what the jobs show."""
        now = self.clock()
        at = now if when is None else float(when)
        with self._lock:
            node = self._nodes.get(str(name))
            if node is None:
                return
            had = self._has_evidence(node, now)
            if not had:
                node.alive_since = at
            node.alive = at if node.alive is None else max(node.alive, at)
            contradicts = node.state in (NodeState.DOWN, NodeState.UNKNOWN)
            if contradicts and not node.in_flight:
                node.next_due = min(node.next_due, (node.checked or now) + self.interval)
            if not contradicts or had:  # nothing shown changes: a chatty job wakes no one
                return
            self._dirty = True
        self._sampler.wake()

    def _has_evidence(self, node: _Node, now: float) -> bool:
        """Whether a job showed the node alive in the last interval or since its last probe."""
        if node.alive is None:
            return False
        return now - node.alive <= self.interval or node.checked is None or node.alive >= node.checked

    def _with_evidence(self, node: _Node, status: NodeStatus, now: float) -> NodeStatus:
        """``status``, UP with its evidence when jobs contradict a DOWN or unknown probe."""
        if status.state not in (NodeState.DOWN, NodeState.UNKNOWN) or not self._has_evidence(node, now):
            return status
        since = node.alive_since if node.alive_since is not None else now
        return replace(status, state=NodeState.UP, since=since, error="", evidence="jobs running")

    def is_down(self, name: str) -> bool:
        node = self._nodes.get(str(name))
        if node is not None and node.state is NodeState.DOWN:
            return True
        return self.pool.is_down(name)

    def status(self, name: str) -> NodeStatus:
        return self.statuses()[str(name)]

    def statuses(self) -> dict[str, NodeStatus]:
        """The latest status of every node (name → NodeStatus)."""
        self._sync_nodes()
        counts = self._job_counts
        now = self.clock()
        with self._lock:
            result = {}
            for name, node in self._nodes.items():
                status = node.status or self._build(node, None, None, "")
                jobs = counts.get(name, 0)
                if status.jobs != jobs:
                    status = replace(status, jobs=jobs)
                result[name] = self._with_evidence(node, status, now)
            return result

    # -- probing ------------------------------------------------------------------
    def probe_once(self, names: Iterable[str] | None = None) -> dict[str, NodeStatus]:
        """Probe the nodes (all by default) now, concurrently; return all statuses.

        Bounded: a node that has not answered within ``probe_timeout`` is
        reported DOWN.
        """
        self._sync_nodes()
        wanted = list(self._nodes) if names is None else [str(n) for n in names]
        self._probe_many(wanted)
        return self.statuses()

    def _launch(self, names: Iterable[str]) -> list[tuple[str, int, threading.Thread]]:
        """Start a probe thread for each named node that has none running."""
        threads: list[tuple[str, int, threading.Thread]] = []
        with self._lock:
            for name in names:
                node = self._nodes.get(name)
                if node is None or node.in_flight:
                    continue
                node.in_flight = True
                node.started = time.monotonic()
                node.token += 1
                thread = threading.Thread(
                    target=self._probe_node,
                    args=(name, node.token),
                    name=f"aup-probe-{name}",
                    daemon=True,
                )
                threads.append((name, node.token, thread))
        for _, _, thread in threads:
            thread.start()
        return threads

    def _give_up(self, name: str, token: int) -> None:
        """A probe ran past ``probe_timeout``: DOWN, and unblock it."""
        message = f"no answer from {self.pool.label(name)} within {self.probe_timeout:g} s"
        self._record_failure(name, token, message, invalidate=True)
        self.pool.disconnect(name)

    def _probe_many(self, names: list[str]) -> None:
        threads = self._launch(names)
        deadline = time.monotonic() + self.probe_timeout
        for name, token, thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self._give_up(name, token)

    def _probe_node(self, name: str, token: int) -> None:
        try:
            try:
                rtt, output = self._probe(name)
            except NodeError as exc:
                self._record_failure(name, token, str(exc))
            except Exception as exc:  # never let a probe thread die silently
                log.exception("probe of node %s failed", name)
                self._record_failure(name, token, f"probe failed: {describe_error(exc)}")
            else:
                self._record_success(name, token, rtt, output)
        finally:
            with self._lock:
                node = self._nodes.get(name)
                if node is not None:
                    node.in_flight = False
                    node.started = None
                self._dirty = True
            self._sampler.wake()

    def _probe(self, name: str) -> tuple[float, str]:
        pool = self.pool
        reused = pool.is_connected(name)
        pool.get_client(name)
        try:
            rtt = self._rtt(name)
        except NodeUnreachableError:
            if not reused:
                raise
            # a pooled connection that died since its last use: one fresh try
            pool.get_client(name)
            rtt = self._rtt(name)
        command = "sh -c " + shlex.quote(probe_script(pool.command_timeout / 2))
        status, out, err = pool.run(name, command)
        if status != 0 and not out:
            raise NodeError(
                f"the probe command failed on {pool.label(name)} (exit status {status}): "
                f"{err.strip().splitlines()[-1] if err.strip() else 'no output'}",
                name,
            )
        return rtt, out

    def _rtt(self, name: str) -> float:
        start = time.perf_counter()
        status, _, err = self.pool.run(name, "true")
        rtt = time.perf_counter() - start
        if status != 0:
            raise NodeError(
                f"the no-op command `true` exited with status {status} on {self.pool.label(name)}"
                + (f": {err.strip()}" if err.strip() else ""),
                name,
            )
        return rtt

    def _record_success(self, name: str, token: int, rtt: float, output: str) -> None:
        parsed = parse_probe_output(output)
        now = self.clock()
        with self._lock:
            node = self._nodes.get(name)
            if node is None or node.token != token:
                return
            state = NodeState.SLOW if rtt > self.slow_rtt else NodeState.UP
            if state is not node.state:
                reason = (
                    f"round trip {rtt * 1000:.0f} ms over {self.slow_rtt * 1000:.0f} ms"
                    if state is NodeState.SLOW
                    else f"reachable, round trip {rtt * 1000:.0f} ms"
                )
                node.history.append(StateChange(now, state, reason))
                node.state, node.since = state, now
            node.failures = 0
            node.error = ""
            node.checked = now
            node.next_due = now + self.interval
            gpus = []
            for gpu in parsed.gpus:
                hist = node.gpu_history.get(gpu.index)
                if hist is None:
                    hist = node.gpu_history[gpu.index] = deque(maxlen=self.gpu_history_len)
                if gpu.utilization is not None:
                    hist.append(gpu.utilization)
                gpus.append(replace(gpu, history=tuple(hist)))
            for index in list(node.gpu_history):
                if all(g.index != index for g in parsed.gpus):
                    del node.gpu_history[index]
            node.status = self._build(node, rtt, replace(parsed, gpus=tuple(gpus)), output)
        self.pool.mark_up(name)

    def _record_failure(self, name: str, token: int, message: str, invalidate: bool = False) -> None:
        now = self.clock()
        with self._lock:
            node = self._nodes.get(name)
            if node is None or node.token != token:
                return
            if invalidate:
                node.token += 1  # a late answer from this probe is ignored
            node.failures += 1
            # capped exponential backoff: interval, 2×, 4×, … up to max_backoff
            node.next_due = now + min(self.interval * 2 ** min(node.failures - 1, 30), self.max_backoff)
            if node.state is not NodeState.DOWN:
                node.history.append(StateChange(now, NodeState.DOWN, message))
                node.state, node.since = NodeState.DOWN, now
            node.error = node.last_error = message
            node.checked = now
            node.status = self._build(node, None, None, "")
        try:
            self.pool.mark_down(name, message)
        except NodeError:
            pass

    def _build(self, node: _Node, rtt: float | None, parsed: ProbeResult | None, output: str) -> NodeStatus:
        try:
            label, display_name = self.pool.label(node.name), self.pool.display_name(node.name)
        except NodeError:
            label = display_name = node.name
        parsed = parsed or ProbeResult()
        return NodeStatus(
            name=node.name,
            display_name=display_name,
            host=label,
            state=node.state,
            since=node.since,
            checked=node.checked,
            rtt=rtt,
            load=parsed.load,
            mem_total=parsed.mem_total,
            mem_available=parsed.mem_available,
            jobs=self._job_counts.get(node.name, 0),
            gpus=parsed.gpus,
            gpu_error=parsed.gpu_error,
            error=node.error,
            last_error=node.last_error,
            failures=node.failures,
            next_probe=node.next_due,
            history=tuple(node.history),
            output=output,
        )

    # -- background thread ----------------------------------------------------------
    def start(self, callback: Callable[[dict[str, NodeStatus]], Any] | None = None) -> None:
        """Probe on a daemon thread; ``callback(statuses)`` after each round."""
        self._sampler.start(lambda: self._round(callback))

    def _round(self, callback: Callable[[dict[str, NodeStatus]], Any] | None) -> float:
        """Launch the probes that are due; returns how long until the next one is (at most
        ``interval``; a probe that ends wakes the sampler sooner)."""
        # Each node is probed on its own schedule: a slow or dead node never
        # delays the others.  Probe threads wake this loop when they finish.
        self._sync_nodes()
        now = self.clock()
        mono = time.monotonic()
        limit = self.probe_timeout
        with self._lock:
            due = [n.name for n in self._nodes.values() if not n.in_flight and n.next_due <= now]
            hung = [
                (n.name, n.token)
                for n in self._nodes.values()
                if n.in_flight and n.started is not None and mono - n.started > limit
            ]
            for n in self._nodes.values():
                if n.in_flight and (n.name, n.token) in hung:
                    n.started = None  # reported once
        for name, token in hung:
            self._give_up(name, token)
        self._launch(due)
        if self._dirty or hung:
            self._dirty = False
            if callback is not None:
                try:
                    callback(self.statuses())
                except Exception:
                    log.exception("node monitor callback failed")
        now = self.clock()
        mono = time.monotonic()
        with self._lock:
            waits = [n.next_due - now for n in self._nodes.values() if not n.in_flight]
            waits += [
                n.started + limit - mono
                for n in self._nodes.values()
                if n.in_flight and n.started is not None
            ]
        wait = min(waits) if waits else self.interval
        return min(max(wait, 0.01), self.interval)

    def retry(self, name: str | None = None) -> None:
        """Probe a node (every node by default) at the next round, ignoring backoff."""
        now = self.clock()
        with self._lock:
            for node in self._nodes.values():
                if name is None or node.name == str(name):
                    node.next_due = now
        self._sampler.wake()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._sampler.stop(timeout)

    @property
    def running(self) -> bool:
        return self._sampler.running
