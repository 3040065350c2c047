"""SIGTERM and SIGHUP handled like a stop.

A closed terminal (SIGHUP), `tmux kill-session`, `kill` or a scheduler's time limit (SIGTERM)
used to end the process on the spot: its jobs, in their own sessions, ran on as orphans, and
the store showed them RUNNING until the next start called them INTERRUPTED and freed their
slots while they still ran. Now such a signal stops the experiment as `S`/Ctrl-C do: each job's
process group is killed (on its node too), jobs and experiment are recorded STOPPED, resources
are freed, and the process exits 130. `kill -9` cannot be caught: the recovery on start covers it.

Signals reach Python only in the main thread, at a point of its choosing, so the handler does no
work itself: it remembers the signal and hands it to whoever owns the main thread now (the
Textual app's event loop, or the headless follower's queue) through a signal-safe call.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, TextIO, cast

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
#: what `signal.signal` returns: a Python handler, SIG_DFL/SIG_IGN, or None for one not set from Python
SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
STOP_WAIT = 20.0  # seconds a signalled run waits for its jobs to be killed and recorded (inside
#                   the usual 30 s a scheduler or `docker stop` gives before SIGKILL)


class StopSignals:
    """Routes SIGTERM/SIGHUP to one callback at a time; a signal that comes while nobody listens
    is kept and given to the next listener."""

    def __init__(self) -> None:
        self.received: int | None = None  # the first stop signal, once one came
        self._target: Callable[[int], None] | None = None
        self._previous: dict[int, SignalHandler] = {}

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def install(self) -> StopSignals:
        """Catch the stop signals from now on (a no-op outside the main thread)."""
        if threading.current_thread() is not threading.main_thread() or self.installed:
            return self
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        """Give the signals back to whatever handled them before `install`."""
        for sig, previous in self._previous.items():
            # a handler not set from Python can't be put back: the default is the nearest
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()
        self._target = None

    def route(self, target: Callable[[int], None] | None) -> None:
        """Send stop signals to `target(signum)` (signal-safe: it must only queue work), or keep
        them for later with None. A signal that already came is given to `target` at once."""
        self._target = target
        if target is not None and self.received is not None:
            target(self.received)

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is None:
            self.received = signum
        target = self._target
        if target is not None:
            target(signum)


#: the process's one latch: `aup-tui run/watch` and the dashboard install it; the app and the
#: headless follower route it while they own the main thread
stop_signals = StopSignals()


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def quiet_on_hangup(stream: TextIO) -> TextIO:
    """`stream`, made to drop writes instead of raising once its terminal is gone."""
    return cast(TextIO, stream if isinstance(stream, QuietOnHangup) else QuietOnHangup(stream))


class QuietOnHangup:
    """A text stream that stops writing, instead of raising, once its terminal is gone.

    After a hang-up (a closed terminal window, `tmux kill-session`) every write to the terminal
    fails with EIO; the stop and its records must still complete, so progress lines and the
    summary are dropped from then on rather than crash the exit path.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self.stream.write(text)
            except (OSError, ValueError):  # EIO after a hang-up, EPIPE, or a closed stream
                self.gone = True
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self.gone = True

    def isatty(self) -> bool:
        try:
            return not self.gone and self.stream.isatty()
        except (OSError, ValueError):
            return False
