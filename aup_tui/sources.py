"""Where the dashboard's news comes from and where its requests go.

`EngineBridge` collects the events of an experiment this process runs from the engine's threads
and wakes the dashboard with one `EngineEvents` message per batch. A source carries the person's
requests the other way (stop a job, stop the experiment, answer a passive job): `LiveSource`
straight to the engine, `StoreSource` through the store to the process that runs the experiment.
The dashboard's worker thread reads the store for watch mode (`StoreSnapshot`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from aup_tui_backends.events import Event, EventBus

from .messages import EngineEvents
from .state import FOLDED_EVENTS


class EngineBridge:
    """Collects engine events from engine threads and wakes `target` once per batch.

    The bus callback never blocks: it appends to a list and posts at most one `EngineEvents`
    message until the app drains the batch.
    """

    KINDS = FOLDED_EVENTS

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self._lock = threading.Lock()
        self._pending: list[Event] = []
        self._posted = False
        self._target: Any = None
        self._unsubscribe: Callable[[], None] | None = bus.subscribe(self._on_event, kinds=self.KINDS)

    def attach(self, target: Any) -> None:
        """Wake `target` (a Textual MessagePump) from now on; wakes it now if events wait."""
        with self._lock:
            self._target = target
            wake = bool(self._pending) and not self._posted
            self._posted = self._posted or wake
        if wake:
            target.post_message(EngineEvents())

    def _on_event(self, event: Event) -> None:
        with self._lock:
            self._pending.append(event)
            if self._posted or self._target is None:
                return
            self._posted = True
            target = self._target
        target.post_message(EngineEvents())

    def drain(self) -> list[Event]:
        with self._lock:
            events, self._pending = self._pending, []
            self._posted = False
        return events

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        with self._lock:
            self._target = None


class LiveSource:
    """An experiment this process runs: requests go straight to the engine."""

    live = True

    def __init__(self, experiment: Any, bridge: EngineBridge) -> None:
        self.experiment = experiment
        self.bridge = bridge

    @property
    def eid(self) -> int | None:
        return self.experiment.eid

    def stop_job(self, jid: int) -> bool:
        return self.experiment.stop_job(jid)

    def stop_experiment(self) -> None:
        self.experiment.stop()

    def submit(self, jid: int, text: str) -> float:
        return self.experiment.resource_manager.submit_result(jid, text)

    def mark_failed(self, jid: int, reason: str) -> None:
        self.experiment.resource_manager.mark_failed(jid, reason)


class StoreSource:
    """An experiment in the store (run by another process, or over): requests go through the store."""

    live = False

    def __init__(self, connector: Any, eid: int) -> None:
        self.connector = connector
        self.eid = eid

    def stop_job(self, jid: int) -> bool:
        self.connector.request_stop(self.eid, jid)
        return True

    def stop_experiment(self) -> None:
        self.connector.request_stop(self.eid)

    def submit(self, jid: int, text: str) -> float:
        from aup_tui_backends.jobs import parse_pasted_output

        results = parse_pasted_output(text)  # raises ResultParseError: the form shows it
        self.connector.submit_passive(self.eid, jid, text)
        return results[-1][0]

    def mark_failed(self, jid: int, reason: str) -> None:
        self.connector.submit_passive(self.eid, jid, reason, failed=True)
