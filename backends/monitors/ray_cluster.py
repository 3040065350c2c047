"""The Ray cluster's nodes, from Ray's state (the GCS): for the nodes panel and `resources --probe`.

:func:`sample_cluster` reads every node Ray knows (alive or dead) with its CPUs and GPUs, total
and in use; :class:`RayClusterMonitor` samples on a thread of its own (never the UI's) while
this process is connected to Ray (the Ray manager connects it), and hands the nodes on as
:class:`~aup_tui_backends.monitors.nodes.NodeStatus` rows; :func:`probe_ray` connects once for
`aup-tui resources --probe`. Ray is imported only inside these functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aup_tui_backends.monitors.nodes import NodeState, NodeStatus
from aup_tui_backends.monitors.sampler import SamplerThread

log = logging.getLogger(__name__)

__all__ = [
    "RayClusterMonitor",
    "RayNode",
    "cluster_summary",
    "format_ray_lines",
    "is_ray_node_key",
    "node_statuses",
    "probe_ray",
    "ray_node_key",
    "sample_cluster",
]


@dataclass(frozen=True)
class RayNode:
    """One node of the cluster as Ray's GCS describes it (memory in bytes)."""

    node_id: str
    address: str
    alive: bool
    head: bool = False
    cpus: float = 0.0
    cpus_used: float | None = None  # None: not known (a dead node)
    gpus: float = 0.0
    gpus_used: float | None = None
    memory: int | None = None
    reason: str = ""  # why it died


def ray_node_key(node_id: str) -> str:
    """The node's name in the nodes panel: `ray <first 6 hex digits of its id>` (fits its column)."""
    return f"ray {node_id[:6]}"


def is_ray_node_key(key: str) -> bool:
    """Whether a nodes-panel row is a Ray node's (`ray_node_key`), not an SSH node's (host[:port])."""
    return key.startswith("ray ")


def sample_cluster() -> list[RayNode]:
    """Every node of the cluster this process is connected to (`ray.init` done), head first."""
    import ray

    available: dict[str, dict[str, float]] = {}
    try:  # per-node free resources: Ray's own state module (what `ray status` reads)
        from ray._private import state

        per_node: Any = state.available_resources_per_node  # untyped in Ray
        available = per_node()
    except Exception:  # noqa: BLE001 — another Ray version: totals only
        log.debug("no per-node availability from Ray", exc_info=True)
    nodes = []
    list_nodes: Any = ray.nodes  # untyped in Ray
    for info in list_nodes():
        node_id = str(info.get("NodeID", ""))
        total = info.get("Resources") or {}
        alive = bool(info.get("Alive"))
        free = available.get(node_id) if alive else None
        cpus, gpus = float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0))
        nodes.append(
            RayNode(
                node_id=node_id,
                address=str(info.get("NodeManagerAddress", "")),
                alive=alive,
                head="node:__internal_head__" in total,
                cpus=cpus,
                cpus_used=None if free is None else max(0.0, cpus - float(free.get("CPU", 0.0))),
                gpus=gpus,
                gpus_used=None if free is None else max(0.0, gpus - float(free.get("GPU", 0.0))),
                memory=int(total["memory"]) if "memory" in total else None,
                reason=str(info.get("DeathReasonMessage") or "") if not alive else "",
            )
        )
    nodes.sort(key=lambda n: (not n.head, not n.alive, n.address, n.node_id))
    return nodes


def _amount(x: float) -> str:
    return f"{x:g}"


def _usage(node: RayNode) -> str:
    """`CPU 1/2 GPU 0/1` (in use of total); `?` for what is not known."""

    def part(label: str, used: float | None, total: float) -> str:
        return f"{label} {'?' if used is None else _amount(used)}/{_amount(total)}"

    return f"{part('CPU', node.cpus_used, node.cpus)} {part('GPU', node.gpus_used, node.gpus)}"


def cluster_summary(nodes: list[RayNode]) -> str:
    """`Ray: 2 nodes alive, 1 dead; CPUs 1/4 in use; GPUs 0/0 in use`."""
    alive = [n for n in nodes if n.alive]
    cpus = sum(n.cpus for n in alive)
    gpus = sum(n.gpus for n in alive)
    cpus_used = sum(n.cpus_used or 0.0 for n in alive)
    gpus_used = sum(n.gpus_used or 0.0 for n in alive)
    return (
        f"Ray: {len(alive)} node{'s' if len(alive) != 1 else ''} alive, {len(nodes) - len(alive)} dead; "
        f"CPUs {_amount(cpus_used)}/{_amount(cpus)} in use; GPUs {_amount(gpus_used)}/{_amount(gpus)} in use"
    )


def format_ray_lines(nodes: list[RayNode]) -> list[str]:
    """The summary, then one line a node: `ray 1a2b3c4d  127.0.0.1  UP  CPU 1/2 GPU 0/0  mem 15.6 GiB`."""
    lines = [cluster_summary(nodes)]
    for n in nodes:
        head = f"{ray_node_key(n.node_id)}  {n.address}{' (head)' if n.head else ''}"
        if not n.alive:
            lines.append(f"{head}  DEAD  {n.reason or 'no reason given'}")
            continue
        mem = f"  mem {n.memory / (1 << 30):.1f} GiB" if n.memory else ""
        lines.append(f"{head}  UP  {_usage(n)}{mem}")
    return lines


def node_statuses(
    nodes: list[RayNode],
    jobs: Mapping[str, int] | None = None,
    since: dict[str, tuple[bool, float]] | None = None,
    now: float | None = None,
) -> dict[str, NodeStatus]:
    """The nodes as the nodes panel's rows (UP or DOWN). `jobs`: Ray node id → our jobs on it;
    `since` (kept by the caller) remembers when each node last changed state."""
    now = time.time() if now is None else now
    since = {} if since is None else since
    out: dict[str, NodeStatus] = {}
    for n in nodes:
        key = ray_node_key(n.node_id)
        was = since.get(n.node_id)
        if was is None or was[0] != n.alive:
            since[n.node_id] = was = (n.alive, now)
        out[key] = NodeStatus(
            name=key,
            host=n.address + (" (head)" if n.head else ""),
            state=NodeState.UP if n.alive else NodeState.DOWN,
            since=was[1],
            checked=now,
            mem_total=n.memory,
            jobs=(jobs or {}).get(n.node_id, 0),
            error="" if n.alive else (n.reason or "Ray says the node is dead"),
            last_error="" if n.alive else n.reason,
            usage=_usage(n) if n.alive else "",
            display_name=key,
        )
    return out


def probe_ray(address: str, connect: Callable[[str], bool]) -> list[str]:
    """`resources --probe`'s lines for env.ini's `ray_address`: connects to the cluster once with
    `connect` (the Ray manager's: an address nobody listens on is refused at once, not retried
    for minutes; True when this call connected, then it disconnects); `address` empty: nothing
    to probe, a local Ray starts with each run."""
    if not address:
        return ["Ray: local — a Ray instance starts with each run (aup-tui init --ray ADDRESS for a cluster)"]
    import ray
    from aup_tui_backends.errors import ConfigError

    own = False
    try:
        own = connect(address)
        return format_ray_lines(sample_cluster())
    except ConfigError as exc:
        return [f"Ray: {exc}"]
    except Exception as exc:  # noqa: BLE001 — a cluster that cannot be reached is a line, not a traceback
        return [f"Ray: cannot reach the cluster at {address}: {' '.join(str(exc).split())[:200]}"]
    finally:
        if own and ray.is_initialized():
            ray.shutdown()


class RayClusterMonitor:
    """Samples the cluster every `interval` s on its own thread while this process is connected
    to Ray, and calls `callback(statuses)` (the nodes panel's rows) after each sample.

    `jobs_source` (optional) gives Ray node id → how many of our jobs run there; `connect`
    (optional) connects this process to the cluster, on the monitor's thread, when it is not
    (a dashboard watching another process's run); then `stop` disconnects."""

    def __init__(
        self,
        interval: float = 5.0,
        jobs_source: Callable[[], Mapping[str, int]] | None = None,
        clock: Callable[[], float] = time.time,
        sample: Callable[[], list[RayNode]] = sample_cluster,
        connect: Callable[[], Any] | None = None,
    ) -> None:
        self.interval = interval
        self.jobs_source = jobs_source
        self.clock = clock
        self._sample = sample
        self._connect = connect
        self._connected = False
        self.error = ""  # why the cluster could not be reached
        self._since: dict[str, tuple[bool, float]] = {}
        self._sampler = SamplerThread("aup-ray-monitor")
        self.last: dict[str, NodeStatus] = {}

    def sample(self) -> dict[str, NodeStatus]:
        """One sample now (blocking): the rows (the last ones while this process is not connected)."""
        import ray

        if not ray.is_initialized():
            if self._connect is None or self._sampler.stopping:  # the run ended: the last rows stay
                return self.last
            try:
                self._connect()
            except Exception as exc:  # noqa: BLE001 — said in `error`; tried again next time
                self.error = str(exc)
                return self.last
            self._connected, self.error = True, ""
        jobs: Mapping[str, int] = {}
        if self.jobs_source is not None:
            try:
                jobs = self.jobs_source()
            except Exception:  # noqa: BLE001 — decoration only
                log.debug("jobs_source failed", exc_info=True)
        self.last = node_statuses(self._sample(), jobs, self._since, self.clock())
        return self.last

    def start(self, callback: Callable[[dict[str, NodeStatus]], Any]) -> None:
        def sample_round() -> float:
            try:
                callback(self.sample())
            except Exception:  # noqa: BLE001 — Ray went away (the run ended): try again later
                log.debug("sampling the Ray cluster failed", exc_info=True)
            return self.interval

        self._sampler.start(sample_round)

    def retry(self, name: str | None = None) -> None:
        """Sample now."""
        self._sampler.wake()

    def stop(self, timeout: float = 2.0) -> None:
        self._sampler.stop(timeout)
        if self._connected:
            import ray

            self._connected = False
            ray.shutdown()
