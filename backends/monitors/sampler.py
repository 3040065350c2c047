"""The background thread a monitor samples on: one round after another, a pause between them
that `wake()` cuts short, and a `stop()` that any thread may call (the sampler's own included)."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["SamplerThread"]


class SamplerThread:
    """Runs `sample_round()` on a daemon thread until stopped; each round returns how many
    seconds to pause before the next, so the next round is scheduled after this one ended and
    slow rounds never pile up."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        """Whether `stop()` was called (the round in progress should end early)."""
        return self._stop.is_set()

    def start(self, sample_round: Callable[[], float]) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(sample_round,), name=self.name, daemon=True)
        self._thread.start()

    def _loop(self, sample_round: Callable[[], float]) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            pause = sample_round()
            self._wake.wait(max(pause, 0.0))

    def wake(self) -> None:
        """End the pause now: the next round starts at once (or right after the current one)."""
        self._wake.set()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop after the current round (waiting up to `timeout` s for it, unless called from it)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None
