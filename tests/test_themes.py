"""Every job status the table can show has its colour in every theme of ours."""

from __future__ import annotations

import pytest
from aup_tui_backends.status import JobStatus
from aup_tui_themes import THEMES, status_variable


@pytest.mark.parametrize("theme", THEMES, ids=lambda t: t.name)
def test_each_theme_colours_every_job_status(theme):
    # RETRY lives in the engine only: the table shows the job RUNNING meanwhile
    shown = [status for status in JobStatus if status is not JobStatus.RETRY]
    assert [s for s in shown if status_variable(s) not in theme.variables] == []
