"""The command line's exit statuses, defined once for the CLI, the TUI and headless runs."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
#: as a shell reports a process ended by Ctrl-C (128 + SIGINT): a stopped experiment
EXIT_STOPPED = 130


def for_status(status: str | None, interrupted: bool = False) -> int:
    """The exit status for an experiment that ended in `status` (stopped or interrupted → 130)."""
    if status == "STOPPED" or interrupted:
        return EXIT_STOPPED
    return EXIT_OK if status == "FINISHED" else EXIT_ERROR
