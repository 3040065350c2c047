"""Shared fixtures: a fresh `.aup` folder with resources and a job script."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import write_script


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with `.aup/` (2 CPU slots) and the job script `job.sh` printing x as its score."""
    from aup_tui_backends.setup import init_aup

    init_aup(str(tmp_path / ".aup"), cpu=2)
    write_script(
        tmp_path,
        "job.sh",
        """
        x=$(sed 's/.*"x": *\\([-0-9.e]*\\).*/\\1/' "$1")
        echo "#Auptimizer:$x"
    """,
    )
    return tmp_path


@pytest.fixture
def utc(monkeypatch):
    """Times on screen are local: pin the zone so texts and snapshots are the same everywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
