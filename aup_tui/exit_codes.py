"""The command line's exit statuses, defined once for the CLI, the TUI and headless runs."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
#: as a shell reports a process ended by Ctrl-C (128 + SIGINT): a stopped experiment
EXIT_STOPPED = 130


def for_status(status: str | None, interrupted: bool = False) -> int:
    """The exit status for an experiment that ended in `status` (stopped or interrupted → 130).

    `status` is an `ExperimentStatus` or the store's text of one ("UNKNOWN" for an experiment the
    store does not have). The enum is imported here, not above: `aup-tui --help` imports this
    module, and importing `aup_tui_backends.status` runs the engine package's `__init__`, which
    loads the whole engine (~120 ms); whenever there is a status to judge the engine is loaded.
    """
    from aup_tui_backends.status import ExperimentStatus

    if status == ExperimentStatus.STOPPED or interrupted:
        return EXIT_STOPPED
    return EXIT_OK if status == ExperimentStatus.FINISHED else EXIT_ERROR
