"""The Textual messages that carry the engine's news to the dashboard, on the app's event loop."""

from __future__ import annotations

from textual.message import Message


class EngineEvents(Message):
    """Engine events are waiting in the `EngineBridge`: drain them (one message per batch)."""


class StoreSnapshot(Message):
    """A store read finished (watch mode); `exp` is None when the experiment is gone."""

    def __init__(self, exp: dict | None, jobs: list[dict] | None, error: str | None = None) -> None:
        super().__init__()
        self.exp, self.jobs, self.error = exp, jobs, error
