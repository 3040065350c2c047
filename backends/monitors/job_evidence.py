"""Jobs as evidence of node health: a job that reports or finishes on a node shows the node works.

:class:`JobEvidence` listens to an experiment's :class:`~aup_tui_backends.events.EventBus` and tells
a :class:`~aup_tui_backends.monitors.NodeMonitor` (:meth:`~NodeMonitor.note_alive`), so the node
panel never says DOWN while the job table shows that node's jobs making progress.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from aup_tui_backends.events import (
    Event,
    EventBus,
    JobEvent,
    JobFailed,
    JobFinished,
    JobIntermediate,
    JobOutput,
    JobStarted,
    JobStopped,
)
from aup_tui_backends.monitors.nodes import NodeMonitor
from aup_tui_backends.ssh.hosts import node_key

__all__ = ["JobEvidence", "node_of_resource"]

#: what a job does that only a working node lets it do
_EVIDENCE = (JobOutput, JobIntermediate, JobFinished)
_KINDS = (JobStarted, JobOutput, JobIntermediate, JobFinished, JobFailed, JobStopped)


def node_of_resource(resource: str, rid: int | None) -> str | None:
    """The node monitor's key (``node 4``) of a job's resource (``node:host``), None when local."""
    kind = resource.partition(":")[0]
    if kind not in ("node", "aws") or rid is None:
        return None
    return node_key(kind, rid)


class JobEvidence:
    """Feeds ``monitor`` from job events: which node each running job is on (from its start),
    and every line, intermediate result or finish of it as evidence that the node is up.

    A start alone is no evidence (it is published before the remote command runs); a failure or
    stop is none either (the node going away is a reason jobs fail)."""

    def __init__(self, monitor: NodeMonitor) -> None:
        self.monitor = monitor
        self._nodes: dict[tuple[int, int], str] = {}
        self._lock = threading.Lock()

    def attach(self, bus: EventBus) -> Callable[[], None]:
        """Listen to ``bus``; returns the function that stops listening."""
        return bus.subscribe(self, _KINDS)

    def __call__(self, event: Event) -> None:
        if not isinstance(event, JobEvent):
            return
        key = (event.eid, event.jid)
        with self._lock:
            if isinstance(event, JobStarted):
                name = node_of_resource(event.resource, event.rid)
                if name is not None:
                    self._nodes[key] = name
                return
            if isinstance(event, (JobFinished, JobFailed, JobStopped)):
                name = self._nodes.pop(key, None)
            else:
                name = self._nodes.get(key)
        if name is not None and isinstance(event, _EVIDENCE):
            self.monitor.note_alive(name)
