"""A job's progress on a node is evidence the node works: the node panel agrees with the jobs.

Real parts: a NodePool and NodeMonitor probing a closed loopback port (so every probe fails, as a
flaky probe path would while jobs run fine), the engine's EventBus, the app's Monitoring glue.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from aup_tui_backends.config import HostSpec
from aup_tui_backends.events import EventBus, JobFailed, JobFinished, JobOutput, JobStarted
from aup_tui_backends.monitors import NodeMonitor, NodeState
from aup_tui_backends.monitors.gpu import GPUMonitor
from aup_tui_backends.monitors.job_evidence import JobEvidence
from aup_tui_backends.ssh import NodePool
from fake_nvml import FakeGPU, FakeNVML
from scenes import CLOCK, demo_state
from sshd import free_port

from aup_tui.app import AupApp
from aup_tui.monitoring import Monitoring, StateJobs
from aup_tui.state import JobRow
from aup_tui.widgets.nodes_panel import NodesPanel

NODE = "node 0"


def dead_monitor(tmp_path, clock=time.monotonic, interval: float = 5.0) -> NodeMonitor:
    """A monitor of one node whose probes always fail (nothing listens on its port)."""
    pool = NodePool(
        {NODE: HostSpec("nobody", "127.0.0.1", free_port(), None)},
        known_hosts=str(tmp_path / "known_hosts"),
        connect_timeout=2,
        command_timeout=2,
    )
    return NodeMonitor(pool, interval=interval, clock=clock, max_backoff=60.0)


def test_a_job_reporting_on_a_down_node_shows_it_up_until_a_newer_probe_fails(tmp_path):
    now = [1000.0]
    monitor = dead_monitor(tmp_path, clock=lambda: now[0])
    assert monitor.probe_once()[NODE].state is NodeState.DOWN
    now[0] += 1
    monitor.note_alive(NODE)
    status = monitor.statuses()[NODE]
    assert (status.state, status.evidence, status.error) == (NodeState.UP, "jobs running", "")
    assert status.since == now[0]
    # evidence brings the next probe forward: within one interval, not after the backoff
    assert status.next_probe is not None and status.next_probe <= now[0] + monitor.interval
    now[0] += 10  # a newer probe fails and the evidence is older than an interval: DOWN again
    down = monitor.probe_once()[NODE]
    assert (down.state, down.evidence) == (NodeState.DOWN, "")
    assert down.error


def test_evidence_within_one_interval_outlives_a_failed_probe(tmp_path):
    now = [1000.0]
    monitor = dead_monitor(tmp_path, clock=lambda: now[0], interval=5.0)
    monitor.probe_once()
    monitor.note_alive(NODE)
    now[0] += 2
    assert monitor.probe_once()[NODE].state is NodeState.UP  # the job spoke 2 s ago
    now[0] += 4
    assert monitor.statuses()[NODE].state is NodeState.DOWN  # 6 s: longer than an interval


def test_job_events_feed_the_monitor_only_with_real_progress(tmp_path):
    monitor = dead_monitor(tmp_path)
    monitor.probe_once()
    bus = EventBus()
    stop = JobEvidence(monitor).attach(bus)
    bus.publish(JobStarted(eid=1, jid=3, rid=0, resource="node:box", attempt=1))
    assert monitor.statuses()[NODE].state is NodeState.DOWN  # published before the command runs
    bus.publish(JobOutput(eid=1, jid=3, line="epoch 1"))
    assert monitor.statuses()[NODE].evidence == "jobs running"
    bus.publish(JobFailed(eid=1, jid=3, error="connection lost"))
    bus.publish(JobOutput(eid=1, jid=3, line="late"))  # the job is no longer known to run there
    stop()
    bus.publish(JobStarted(eid=1, jid=4, rid=1, resource="node:other", attempt=1))
    bus.publish(JobFinished(eid=1, jid=4, score=0.5))  # not listening any more, unknown node anyway


def test_watch_mode_counts_new_results_and_finishes_as_evidence():
    state = demo_state()
    state.jobs.clear()
    state.jobs[1] = JobRow(1, status="RUNNING", resource="node:box", rid=0)
    state.jobs[2] = JobRow(2, status="RUNNING", resource="gpu:0", rid=0)
    source = StateJobs(state, "/nonexistent")
    assert source.progressed_nodes() == []  # first sight: nothing new yet
    state.jobs[1].results = 1
    state.jobs[2].results = 1
    assert source.progressed_nodes() == [NODE]
    assert source.progressed_nodes() == []
    state.jobs[1].status = "FINISHED"
    assert source.progressed_nodes() == [NODE]


def node_row(app) -> list[str]:
    from textual.widgets import DataTable

    table = app.screen.query_one(NodesPanel).query_one(DataTable)
    if not table.display or not table.row_count:
        return []
    return [str(getattr(c, "plain", c)) for c in table.get_row(NODE)]


async def test_node_panel_agrees_with_a_job_reporting_from_its_node(tmp_path):
    bus = EventBus()
    nodes = dead_monitor(tmp_path, clock=time.time, interval=5.0)
    gpu = GPUMonitor(nvml=FakeNVML([FakeGPU()]), interval=0.2, proc_root="/nonexistent")
    mon = Monitoring(gpu=gpu, nodes=nodes, experiment=SimpleNamespace(bus=bus))
    app = AupApp(state=demo_state(), clock=CLOCK, find=False)
    app.monitoring = mon
    async with app.run_test(size=(200, 50)) as pilot:

        async def until(predicate, timeout=10.0):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not predicate():
                await pilot.pause(0.05)
            return predicate()

        assert await until(lambda: "DOWN" in node_row(app)), node_row(app)
        bus.publish(JobStarted(eid=1, jid=3, rid=0, resource="node:box", attempt=1))
        bus.publish(JobOutput(eid=1, jid=3, line="epoch 1"))
        assert await until(lambda: "UP" in node_row(app)), node_row(app)
        assert "jobs running" in node_row(app)


def test_a_chatty_job_does_not_wake_the_monitor_for_every_line(tmp_path):
    monitor = dead_monitor(tmp_path)
    monitor.probe_once()
    monitor.note_alive(NODE)
    monitor._dirty = False  # the monitor's loop reported the change
    for _ in range(1000):
        monitor.note_alive(NODE)
    assert not monitor._dirty  # nothing shown changed: no new report
    assert monitor.statuses()[NODE].evidence == "jobs running"
