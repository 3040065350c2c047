"""Deterministic scenes for the GPU and nodes panels and the node detail (snapshots, screenshots).

Fixed clock (tests/scenes.py's), a fake NVML sampled by the real GPUMonitor, and fixed node
statuses: UP, SLOW and DOWN nodes, one with GPUs.
"""

from __future__ import annotations

from aup_tui_backends.monitors.gpu import GPUMonitor, GPUSnapshot, GPUStatus, JobProcessInfo
from aup_tui_backends.monitors.nodes import NodeState, NodeStatus, StateChange
from fake_nvml import FakeGPU, FakeNVML
from scenes import CLOCK, NOW_OFFSET, T0, demo_state

NOW = T0 + NOW_OFFSET
GIB = 1 << 30

#: utilisation patterns (per sample) of the local fake GPUs
_PATTERNS = [
    lambda i: 70 + (i * 7) % 29,  # busy
    lambda i: (i * 13) % 100,  # bursty
    lambda i: 5 + (i % 4),  # nearly idle
]


def gpu_snapshot(samples: int = 40) -> GPUSnapshot:
    """Four local GPUs: two running our jobs (one process each, matched to jobs 23 and 24), one
    nearly idle with a process that is not ours, one lost mid-run."""
    nvml = FakeNVML(
        [
            FakeGPU(
                name="NVIDIA A100-SXM4-40GB",
                mem_used=31 * GIB + GIB // 3,
                temp=71,
                power_mw=287_000,
                processes=[(4242, 31 * GIB)],
            ),
            FakeGPU(
                name="NVIDIA A100-SXM4-40GB",
                mem_used=12 * GIB,
                temp=64,
                power_mw=201_000,
                processes=[(4250, 12 * GIB)],
            ),
            FakeGPU(
                name="NVIDIA A100-SXM4-40GB",
                mem_used=GIB // 2,
                temp=38,
                power_mw=62_000,
                processes=[(777, GIB // 2)],
            ),
            FakeGPU(name="NVIDIA A100-SXM4-40GB", mem_used=2 * GIB, temp=45, power_mw=90_000),
        ]
    )
    t = [T0]
    monitor = GPUMonitor(nvml=nvml, clock=lambda: t[0], proc_root="/nonexistent")
    monitor.set_jobs([JobProcessInfo(23, 4242, ("0",)), JobProcessInfo(24, 4250, ("1",))])
    snap = None
    for i in range(samples):
        for gpu, pattern in zip(nvml.gpus, _PATTERNS + [_PATTERNS[1]]):
            gpu.util = pattern(i)
        if i == samples - 1:
            nvml.gpus[3].fail = nvml.NVMLError_GpuIsLost()
        t[0] = NOW - (samples - 1 - i)
        snap = monitor.sample()
    monitor.close()
    return snap


def no_gpu_snapshot() -> GPUSnapshot:
    return GPUSnapshot(available=False, reason="NVML Shared Library Not Found", timestamp=NOW)


def node_statuses() -> dict[str, NodeStatus]:
    """Three nodes: gpu1 UP with two GPUs and a job, cpu2 SLOW, cpu3 DOWN since a minute ago."""
    remote_gpus = (
        GPUStatus(
            index=0,
            name="NVIDIA GeForce RTX 3090",
            utilization=88,
            memory_used=20 * GIB,
            memory_total=24 * GIB,
            temperature=77,
            power_draw=312.0,
            history=tuple(float(60 + (i * 11) % 40) for i in range(30)),
        ),
        GPUStatus(
            index=1,
            name="NVIDIA GeForce RTX 3090",
            utilization=0,
            memory_used=GIB // 4,
            memory_total=24 * GIB,
            temperature=35,
            power_draw=21.0,
            history=(0.0,) * 30,
        ),
    )
    output_up = (
        "0.42 0.35 0.30 2/611 81234\n@@mem\nMemTotal: 65843212 kB\nMemAvailable: 40211000 kB\n"
        "@@gpu\n0, NVIDIA GeForce RTX 3090, 88, 20480, 24576, 77, 312.00\n"
        "1, NVIDIA GeForce RTX 3090, 0, 256, 24576, 35, 21.00\n@@rc 0\n"
    )
    return {
        "node 1": NodeStatus(
            name="node 1",
            host="me@gpu1.lab:22",
            state=NodeState.UP,
            since=NOW - 742,
            checked=NOW - 2,
            rtt=0.004,
            load=(0.42, 0.35, 0.30),
            mem_total=65843212 * 1024,
            mem_available=40211000 * 1024,
            jobs=1,
            gpus=remote_gpus,
            next_probe=NOW + 3,
            output=output_up,
            history=(StateChange(NOW - 742, NodeState.UP, "reachable, round trip 4 ms"),),
        ),
        "node 2": NodeStatus(
            name="node 2",
            host="me@cpu2.lab:2222",
            state=NodeState.SLOW,
            since=NOW - 95,
            checked=NOW - 1,
            rtt=0.734,
            load=(3.91, 3.60, 2.80),
            mem_total=16 * GIB,
            mem_available=3 * GIB,
            jobs=2,
            next_probe=NOW + 4,
            output="3.91 3.60 2.80 9/320 5511\n@@mem\nMemTotal: 16777216 kB\nMemAvailable: 3145728 kB\n"
            "@@gpu\n@@nosmi\n",
            history=(
                StateChange(NOW - 740, NodeState.UP, "reachable, round trip 12 ms"),
                StateChange(NOW - 95, NodeState.SLOW, "round trip 734 ms over 500 ms"),
            ),
        ),
        "node 3": NodeStatus(
            name="node 3",
            host="me@cpu3.lab:22",
            state=NodeState.DOWN,
            since=NOW - 61,
            checked=NOW - 1,
            error="cannot connect to me@cpu3.lab:22: connection refused — is sshd running there?",
            last_error="cannot connect to me@cpu3.lab:22: connection refused — is sshd running there?",
            failures=4,
            next_probe=NOW + 39,
            history=(
                StateChange(NOW - 741, NodeState.UP, "reachable, round trip 3 ms"),
                StateChange(
                    NOW - 61, NodeState.DOWN, "lost the connection to me@cpu3.lab:22: Socket is closed"
                ),
            ),
        ),
    }


def panels_app(theme: str = "aup-dark", gpus: bool = True, nodes: bool = True):
    """The demo dashboard with the GPU and nodes panels fed by fixed monitors."""
    from aup_tui.app import AupApp
    from aup_tui.monitoring import StaticMonitoring

    app = AupApp(state=demo_state(), clock=CLOCK, theme=theme, find=False)
    app.monitoring = StaticMonitoring(
        gpu_snapshot() if gpus else no_gpu_snapshot(), node_statuses() if nodes else {}
    )
    return app


async def open_node(pilot, name: str = "node 3") -> None:
    """Focus the nodes panel and open ``name``'s details (a run_before for snapshots)."""
    from aup_tui.widgets.nodes_panel import NodesPanel

    await pilot.pause()
    panel = pilot.app.screen.query_one(NodesPanel)
    panel.post_message(NodesPanel.NodeSelected(panel, name))
    await pilot.pause(0.2)


def node_detail_app(node: str = "node 3", theme: str = "aup-dark"):
    """``panels_app`` with ``node``'s detail open (for screenshots: no keys needed).

    Times on that screen are local: the zone is pinned to UTC so the picture is the same
    everywhere.
    """
    import os
    import time

    from aup_tui.app import AupApp
    from aup_tui.monitoring import StaticMonitoring
    from aup_tui.screens.node_detail import NodeDetailScreen

    os.environ["TZ"] = "UTC"
    time.tzset()

    import aup_tui.app

    class DetailApp(AupApp):
        CSS_PATH = os.path.join(os.path.dirname(aup_tui.app.__file__), AupApp.CSS_PATH)

        def on_mount(self) -> None:
            super().on_mount()
            status = self.monitoring.last_statuses[node]
            self.call_after_refresh(
                lambda: self.push_screen(NodeDetailScreen(status, self.monitoring, clock=CLOCK))
            )

    app = DetailApp(state=demo_state(), clock=CLOCK, theme=theme, find=False)
    app.monitoring = StaticMonitoring(gpu_snapshot(), node_statuses())
    return app
