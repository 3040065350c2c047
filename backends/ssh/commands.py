"""Starting a command (or a subsystem) on an SSH channel within a deadline."""

from __future__ import annotations

import threading
from typing import Any

from .errors import CommandTimeoutError

__all__ = ["exec_within"]


def exec_within(
    chan: Any, command: str, timeout: float, label: str = "the node", subsystem: bool = False
) -> None:
    """``chan.exec_command(command)`` (``chan.invoke_subsystem(command)`` with ``subsystem``),
    giving up after ``timeout`` s: paramiko waits for the server's answer to the request without
    a deadline, so a wedged channel would hang its caller forever. At the deadline the channel
    is closed and :class:`CommandTimeoutError` raised (a retry is the caller's business)."""
    fired = threading.Event()
    what = f"to start its {command} subsystem" if subsystem else "to run a command"

    def give_up() -> None:
        fired.set()
        try:
            chan.close()
        except Exception:
            pass

    timer = threading.Timer(timeout, give_up)
    timer.daemon = True
    timer.start()
    try:
        (chan.invoke_subsystem if subsystem else chan.exec_command)(command)
    except Exception:
        if fired.is_set():
            raise CommandTimeoutError(
                f"{label} did not answer a request {what} within {timeout:g} s", label
            ) from None
        raise
    finally:
        timer.cancel()
    if fired.is_set():  # answered just as the deadline closed the channel
        raise CommandTimeoutError(f"{label} did not answer a request {what} within {timeout:g} s", label)


_paramiko_quieted = False
