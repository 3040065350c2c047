"""Snapshots of the GPU and nodes panels and the node detail on deterministic data.

Fixed clock, a fake NVML sampled by the real GPUMonitor, fixed node statuses (tests/panel_scenes.py).
Regenerate after an intended change with `pytest tests/test_snapshots_panels.py --snapshot-update`;
`python screenshots/make.py` renders the same scenes for the README.
"""

from __future__ import annotations

import pytest
from panel_scenes import open_node, panels_app

SMALL = (80, 24)
TALL = (100, 40)
BIG = (200, 50)


pytestmark = pytest.mark.usefixtures("utc")  # times on screen are local: pinned to UTC


async def settle(pilot):
    await pilot.pause(0.2)


@pytest.mark.parametrize("size", [SMALL, TALL, BIG], ids=["80x24", "100x40", "200x50"])
def test_dashboard_with_gpu_and_node_panels(snap_compare, size):
    """Four local GPUs (two running our jobs, one lost), a node with two GPUs; nodes UP/SLOW/DOWN."""
    assert snap_compare(panels_app(), run_before=settle, terminal_size=size)


def test_panels_without_nvml(snap_compare):
    """No NVIDIA library: one line with NVML's reason; the nodes still show."""
    assert snap_compare(panels_app(gpus=False), run_before=settle, terminal_size=BIG)


def test_panels_in_the_light_theme(snap_compare):
    assert snap_compare(panels_app(theme="aup-light"), run_before=settle, terminal_size=BIG)


def test_node_detail_of_a_down_node(snap_compare):
    async def run_before(pilot):
        await open_node(pilot, "node 3")

    assert snap_compare(panels_app(), run_before=run_before, terminal_size=SMALL)


def test_node_detail_with_gpus(snap_compare):
    async def run_before(pilot):
        await open_node(pilot, "node 1")

    assert snap_compare(panels_app(), run_before=run_before, terminal_size=BIG)
