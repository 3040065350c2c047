"""Snapshots of the app's own screens on deterministic data (fixed clock, fixed scores).

Regenerate after an intended change with `pytest tests/test_snapshots.py --snapshot-update`;
`python screenshots/make.py` renders the same scenes as SVGs for the README.
"""

from __future__ import annotations

import pytest
from scenes import dashboard_app, empty_app, picker_app

SMALL = (80, 24)
WIDE = (160, 40)


@pytest.mark.parametrize("theme", ["aup-dark", "aup-light", "aup-high-contrast"])
def test_dashboard_in_each_theme(snap_compare, theme):
    assert snap_compare(dashboard_app(theme=theme), terminal_size=SMALL)


def test_dashboard_wide(snap_compare):
    assert snap_compare(dashboard_app(), terminal_size=WIDE)


def test_dashboard_with_a_passive_job_waiting(snap_compare):
    # the form opens by itself; escape closes it and the header's badge says the job waits
    assert snap_compare(dashboard_app(waiting=True), press=["escape"], terminal_size=SMALL)


def test_dashboard_filtered_by_text(snap_compare):
    assert snap_compare(dashboard_app(), press=["slash", *"early", "enter"], terminal_size=SMALL)


def test_dashboard_sorted_by_score(snap_compare):
    async def sort(pilot):
        from aup_tui.widgets.job_table import JobTable

        pilot.app.screen.query_one(JobTable).sort_by("score", reverse=False)
        await pilot.pause()

    assert snap_compare(dashboard_app(), run_before=sort, terminal_size=SMALL)


def test_score_plot_over_time(snap_compare):
    async def over_time(pilot):
        from aup_tui.widgets.score_plot import ScorePlot

        pilot.app.screen.query_one(ScorePlot).x_axis = "time"  # what x does, without its toast
        await pilot.pause()

    assert snap_compare(dashboard_app(), run_before=over_time, terminal_size=(200, 50))


def test_stop_job_confirm(snap_compare):
    assert snap_compare(dashboard_app(), press=["G", "s"], terminal_size=SMALL)


def test_read_only_dashboard_hides_the_stop_keys(snap_compare):
    assert snap_compare(dashboard_app(source=False, status="FINISHED", running=0), terminal_size=SMALL)


def test_empty_state(snap_compare):
    assert snap_compare(empty_app(), terminal_size=SMALL)


def test_picker(snap_compare):
    assert snap_compare(picker_app(), terminal_size=SMALL)
