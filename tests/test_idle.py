"""An idle dashboard stays idle: once a second it redraws what changed (the running jobs' rows,
the header's clock), not the whole job table, the panels or the layout (issue 12: idle CPU)."""

from __future__ import annotations

import asyncio
import time

from aup_tui_backends.monitors.gpu import GPUSnapshot
from scenes import demo_state

from aup_tui.app import AupApp
from aup_tui.monitoring import GPUSampled, Monitoring
from aup_tui.widgets.job_table import JobTable
from aup_tui.widgets.nodes_panel import NodeSummary


async def test_a_running_dashboard_redraws_only_the_running_rows_each_second(monkeypatch):
    full, rows, summaries = [], [], []
    refresh, update = JobTable.refresh, NodeSummary.update

    def counting_refresh(self, *regions, **kw):
        (rows if regions else full).append(regions)
        return refresh(self, *regions, **kw)

    monkeypatch.setattr(JobTable, "refresh", counting_refresh)
    monkeypatch.setattr(
        NodeSummary, "update", lambda self, *a, **k: (summaries.append(a), update(self, *a, **k))
    )
    app = AupApp(state=demo_state(running=2), clock=time.time, find=False)  # durations move on
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one(JobTable)
        while not table.has_focus:  # focus restyles every widget once: not what this is about
            await pilot.pause(0.05)
        await pilot.pause(0.5)
        full.clear(), rows.clear(), summaries.clear()
        await asyncio.sleep(2.2)
        assert not full, "the whole job table was redrawn while only two durations changed"
        assert 2 <= len(rows) <= 8  # the two running rows, once a second
        assert not summaries  # the nodes summary's text did not change: no relayout


def test_no_gpus_is_posted_once_while_the_reason_stays():
    posted = []

    class Target:
        def post_message(self, message):
            posted.append(message)

    mon = Monitoring()
    mon.subscribe(target := Target())
    for t in (1.0, 2.0, 3.0):
        mon._on_gpu(GPUSnapshot(available=False, reason="NVML Shared Library Not Found", timestamp=t))
    mon._on_gpu(GPUSnapshot(available=False, reason="Driver Not Loaded", timestamp=4.0))
    assert [m.snapshot.reason for m in posted if isinstance(m, GPUSampled)] == [
        "NVML Shared Library Not Found",
        "Driver Not Loaded",
    ]
    assert mon.last_snapshot is not None and mon.last_snapshot.timestamp == 4.0  # new subscribers: the latest
    assert target
