"""Exit statuses: judged by the status model, and cheap to import for `aup-tui --help`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from aup_tui_backends.status import ExperimentStatus

from aup_tui.exit_codes import EXIT_ERROR, EXIT_OK, EXIT_STOPPED, for_status


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (ExperimentStatus.FINISHED, EXIT_OK),
        (ExperimentStatus.STOPPED, EXIT_STOPPED),
        (ExperimentStatus.FAILED, EXIT_ERROR),
        (ExperimentStatus.INTERRUPTED, EXIT_ERROR),
        ("FINISHED", EXIT_OK),  # as the store records it
        ("UNKNOWN", EXIT_ERROR),  # an experiment the store does not have
        (None, EXIT_ERROR),
    ],
)
def test_exit_status_of_an_ended_experiment(status: str | None, code: int) -> None:
    assert for_status(status) == code


def test_an_interrupted_run_exits_stopped_whatever_its_status() -> None:
    assert for_status(ExperimentStatus.FINISHED, interrupted=True) == EXIT_STOPPED


def test_importing_the_exit_codes_does_not_load_the_engine() -> None:
    probe = "import sys, aup_tui.exit_codes; print('aup_tui_backends' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
