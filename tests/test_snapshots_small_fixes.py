"""Snapshots of the smaller dashboard fixes (issue 12, item 13): the help opened with F1, an empty
filter result, the GPU panel on a machine without GPUs, the score plot's y axis on a tall plot.

Regenerate after an intended change with
`pytest tests/test_snapshots_small_fixes.py --snapshot-update`.
"""

from __future__ import annotations

import pytest
from panel_scenes import panels_app
from scenes import dashboard_app

SMALL = (80, 24)


def test_help_opened_with_f1(snap_compare):
    assert snap_compare(dashboard_app(), press=["f1"], terminal_size=(100, 50))  # tall: every key shows


def test_filter_that_matches_nothing(snap_compare):
    assert snap_compare(dashboard_app(), press=["slash", *"xyz", "enter"], terminal_size=SMALL)


@pytest.mark.usefixtures("utc")
@pytest.mark.parametrize("size", [(200, 50), (100, 40)], ids=["wide", "narrow-tall"])
def test_dashboard_without_gpus(snap_compare, size):
    async def settle(pilot):
        await pilot.pause(0.2)

    assert snap_compare(panels_app(gpus=False, nodes=False), run_before=settle, terminal_size=size)


def test_score_plot_y_axis_on_a_tall_plot(snap_compare):
    assert snap_compare(dashboard_app(), terminal_size=(100, 50))
