"""The dashboard's live panels (GPUs, nodes) and the node detail, fed by the monitors' messages.

Real parts: the GPU monitor's thread on a fake NVML, the node monitor over real loopback sshd
servers (tests/sshd.py), the app's own glue (aup_tui/monitoring.py) — nothing here blocks the UI.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from aup_tui_backends.monitors.gpu import GPUMonitor, JobProcessInfo
from aup_tui_backends.monitors.nodes import NodeState, StateChange
from fake_nvml import FakeGPU, FakeNVML
from panel_scenes import NOW, gpu_snapshot, node_statuses
from scenes import CLOCK, demo_state
from sshd import sshd_factory, sshd_server  # noqa: F401  (fixtures)

from aup_tui.app import AupApp
from aup_tui.monitoring import GPUSampled, Monitoring, NodesProbed, StaticMonitoring
from aup_tui.screens.dashboard import DashboardScreen
from aup_tui.screens.node_detail import NodeDetailScreen
from aup_tui.widgets.gpu_panel import GPUPanel
from aup_tui.widgets.nodes_panel import EMPTY_TEXT, NodesPanel

WIDE = (200, 50)
SMALL = (80, 24)
GIB = 1 << 30


pytestmark = pytest.mark.usefixtures("utc")  # times on screen are local: pinned to UTC


def make_app(monitoring) -> AupApp:
    app = AupApp(state=demo_state(), clock=CLOCK, find=False)
    app.monitoring = monitoring
    return app


def gpu_text(app) -> str:
    return app.screen.query_one(GPUPanel).render().plain


def node_rows(app) -> dict[str, list[str]]:
    """What the nodes table shows: node name → its cells' text."""
    from textual.widgets import DataTable

    table = app.screen.query_one(NodesPanel).query_one(DataTable)
    if not table.display:
        return {}
    return {key.value: [str(getattr(c, "plain", c)) for c in table.get_row(key)] for key in table.rows}


async def wait_until(pilot, predicate, timeout: float = 10.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await pilot.pause(step)
    return predicate()


# -- the GPU panel -------------------------------------------------------------------------------


async def test_gpu_panel_follows_samples_posted_from_another_thread():
    mon = StaticMonitoring()
    app = make_app(mon)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        assert "GPU monitor: not started yet" in gpu_text(app)
        snap = gpu_snapshot()
        thread = threading.Thread(target=mon.push, kwargs={"snapshot": snap})
        thread.start()
        thread.join(5)
        assert await wait_until(pilot, lambda: "A100-SXM4-40GB" in gpu_text(app))
        lines = gpu_text(app).splitlines()
        assert lines[0].startswith("4 GPUs (1 lost) · driver 550.54.15")
        gpu0 = next(line for line in lines if line.lstrip().startswith("0 "))
        assert "82%" in gpu0 and "31.3/40G" in gpu0 and "71°C" in gpu0 and "job 23" in gpu0
        assert "+1 proc" in next(line for line in lines if line.lstrip().startswith("2 "))
        assert "LOST: GPU is lost" in next(line for line in lines if line.lstrip().startswith("3 "))


async def test_gpu_panel_from_the_real_monitor_thread_jobs_and_a_lost_gpu():
    nvml = FakeNVML(
        [
            FakeGPU(
                name="NVIDIA H100 80GB HBM3",
                util=55,
                mem_used=20 * GIB,
                mem_total=80 * GIB,
                processes=[(4242, 20 * GIB)],
            ),
            FakeGPU(name="NVIDIA H100 80GB HBM3", util=3),
        ]
    )
    gpu = GPUMonitor(nvml=nvml, interval=0.05, proc_root="/nonexistent")
    mon = Monitoring(gpu=gpu, jobs_source=lambda: ([JobProcessInfo(7, 4242, ("0",))], {}))
    app = make_app(mon)
    async with app.run_test(size=WIDE) as pilot:
        assert await wait_until(pilot, lambda: "job 7" in gpu_text(app)), gpu_text(app)
        assert "55%" in gpu_text(app) and "20.0/80G" in gpu_text(app)
        nvml.gpus[1].fail = nvml.NVMLError_GpuIsLost()
        assert await wait_until(pilot, lambda: "LOST: GPU is lost" in gpu_text(app)), gpu_text(app)
        nvml.gpus[0].util = 97
        assert await wait_until(pilot, lambda: "97%" in gpu_text(app))
        assert "job 7" in gpu_text(app)  # the monitor keeps going; the other GPU still shows its job
    assert not gpu.running  # stopped with the app


async def test_no_driver_is_one_line_with_nvml_reason():
    nvml = FakeNVML([FakeGPU()])
    nvml.init_error = nvml.NVMLError_DriverNotLoaded()
    app = make_app(Monitoring(gpu=GPUMonitor(nvml=nvml, interval=0.05)))
    async with app.run_test(size=WIDE) as pilot:
        assert await wait_until(pilot, lambda: "Driver Not Loaded" in gpu_text(app))
        assert gpu_text(app) == "no GPUs: Driver Not Loaded"
        assert node_rows(app) == {}
        assert EMPTY_TEXT in str(app.screen.query_one("#nodes-summary").render())


async def test_panels_fit_a_small_terminal_in_one_line_each():
    app = make_app(StaticMonitoring(gpu_snapshot(), node_statuses()))
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause(0.2)
        assert gpu_text(app) == "GPU 0:82% 1:7% 2:8% 3:lost +2 remote"
        summary = str(app.screen.query_one("#nodes-summary").render())
        assert summary == "Nodes 1 UP 1 SLOW 1 DOWN (node 3)"
        # enter on the one-line summary opens the worst node
        app.screen.query_one("#nodes-summary").focus()
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, NodeDetailScreen) and app.screen.node == "node 3"


# -- the nodes panel and the node detail ----------------------------------------------------------


async def test_nodes_panel_rows_and_states_in_theme_colours():
    app = make_app(StaticMonitoring(gpu_snapshot(), node_statuses()))
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause(0.2)
        rows = node_rows(app)
        assert list(rows) == ["node 1", "node 2", "node 3"]
        assert rows["node 1"] == ["node 1", "UP", "4 ms", "0.42", "24.4/63G", "1", "12m22s", ""]
        assert rows["node 2"] == ["node 2", "SLOW", "734 ms", "3.91", "13.0/16G", "2", "1m35s", ""]
        # down a minute ago, and why
        assert rows["node 3"] == [
            "node 3",
            "DOWN",
            "—",
            "—",
            "—",
            "·",
            "1m01s",
            "connection refused — is sshd running there?",
        ]
        from textual.widgets import DataTable

        table = app.screen.query_one(NodesPanel).query_one(DataTable)
        variables = app.theme_variables
        styles = {key.value: str(table.get_row(key)[1].style) for key in table.rows}
        assert variables["status-finished"].lower() in styles["node 1"].lower()
        assert variables["status-waiting"].lower() in styles["node 2"].lower()
        assert variables["status-failed"].lower() in styles["node 3"].lower()
        # the remote GPUs are in the GPU panel, under their node
        text = gpu_text(app)
        assert "node 1 · me@gpu1.lab:22 · UP" in text and "RTX 3090" in text


async def test_enter_opens_the_node_detail_and_escape_returns():
    mon = StaticMonitoring(gpu_snapshot(), node_statuses())
    app = make_app(mon)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause(0.2)
        from textual.widgets import DataTable

        table = app.screen.query_one(NodesPanel).query_one(DataTable)
        table.focus()
        await pilot.press("down", "down", "enter")
        await pilot.pause(0.2)
        screen = app.screen
        assert isinstance(screen, NodeDetailScreen) and screen.node == "node 3"
        error = str(screen.query_one("#node-error").render())
        assert "connection refused — is sshd running there?" in error
        history = str(screen.query_one("#node-history").render())
        assert history.index("DOWN lost the connection") < history.index("UP   reachable")  # newest first
        assert "4 failed in a row" in history
        assert "the last probe failed" in str(screen.query_one("#node-output").render())

        # a new round arrives while it is open: node 3 is back
        statuses = node_statuses()
        back = replace(
            statuses["node 3"],
            state=NodeState.UP,
            since=NOW,
            error="",
            rtt=0.002,
            output="0.01 0.02 0.03 1/100 42\n@@mem\n@@gpu\n@@nosmi\n",
            history=statuses["node 3"].history
            + (StateChange(NOW, NodeState.UP, "reachable, round trip 2 ms"),),
        )
        mon.push(statuses={**statuses, "node 3": back})
        assert await wait_until(
            pilot, lambda: "0.01 0.02 0.03" in str(screen.query_one("#node-output").render())
        )
        assert "recovered from: cannot connect" in str(screen.query_one("#node-error").render())
        assert str(screen.query_one("#node-history").render()).startswith("09:12:34 UP")

        await pilot.press("r")
        assert mon.retried == ["node 3"]
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen)
        assert node_rows(app)["node 3"][1] == "UP"  # the dashboard followed too
        assert not any(isinstance(s, NodeDetailScreen) for s in mon._subscribers)  # unsubscribed


async def test_node_detail_shows_the_nodes_gpus_and_probe_output():
    statuses = node_statuses()
    app = make_app(StaticMonitoring(gpu_snapshot(), statuses))
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause(0.1)
        app.push_screen(NodeDetailScreen(statuses["node 1"], app.monitoring, clock=CLOCK))
        await pilot.pause(0.2)
        screen = app.screen
        gpus = screen.query_one(GPUPanel).render().plain
        assert "RTX 3090" in gpus and "88%" in gpus and "312W" in gpus and "A100" not in gpus
        assert "MemAvailable: 40211000 kB" in str(screen.query_one("#node-output").render())
        title = str(screen.query_one("#node-title").render())
        assert title.startswith("node 1  me@gpu1.lab:22  UP for 12m22s") and "RTT 4 ms" in title
        keys = {b.key: b.description for b in NodeDetailScreen.BINDINGS}
        assert keys["escape"] == "Back" and keys["r"] == "Probe now"


async def test_no_nodes_configured():
    app = make_app(StaticMonitoring(gpu_snapshot(), {}))
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause(0.1)
        assert str(app.screen.query_one("#nodes-summary").render()) == EMPTY_TEXT


def test_a_down_nodes_problem_is_told_without_its_address():
    from aup_tui.widgets.nodes_panel import brief_error

    assert brief_error("cannot connect to me@cpu3.lab:22: timed out after 5 s") == "timed out after 5 s"
    assert (
        brief_error("host key for 127.0.0.1:2222 changed — remove the old key from ~/.ssh/known_hosts")
        == "host key changed — remove the old key from ~/.ssh/known_hosts"
    )
    assert brief_error("command timed out after 10 s on me@gpu1.lab:22") == "command timed out after 10 s"


def test_messages_carry_the_monitors_data():
    snap = gpu_snapshot()
    assert GPUSampled(snap).snapshot is snap
    assert GPUSampled.handler_name == "on_gpu_sampled" and NodesProbed.handler_name == "on_nodes_probed"


# -- real sshd: a node that dies shows DOWN, and comes back -------------------------------------------


async def test_killed_sshd_shows_down_within_two_intervals_then_up(sshd_server, tmp_path):  # noqa: F811
    from aup_tui_backends.setup import init_aup

    aup = tmp_path / ".aup"
    init_aup(str(aup), node=[sshd_server.mapping_value()])
    known_hosts = sshd_server.factory.write_known_hosts(tmp_path / "known_hosts", [sshd_server])
    interval = 1.0
    mon = Monitoring(auppath=str(aup), nvml=FakeNVML([]), node_interval=interval, known_hosts=known_hosts)
    app = make_app(mon)

    def state() -> str | None:
        row = node_rows(app).get("node 1")
        return row[1] if row else None

    async with app.run_test(size=WIDE) as pilot:
        assert await wait_until(pilot, lambda: state() == "UP", timeout=15), node_rows(app)
        assert mon.nodes is not None and mon.nodes.pool.connect_count("node 1") == 1

        killed = time.monotonic()
        sshd_server.kill()
        assert await wait_until(pilot, lambda: state() == "DOWN", timeout=10, step=0.02), node_rows(app)
        assert time.monotonic() - killed <= 2 * interval
        status = app.screen.query_one(NodesPanel).statuses["node 1"]
        assert f"127.0.0.1:{sshd_server.port}" in status.error

        sshd_server.start()  # it comes back by itself (the next probe is due within the backoff)
        assert await wait_until(pilot, lambda: state() == "UP", timeout=15), node_rows(app)
        assert [c.state for c in app.screen.query_one(NodesPanel).statuses["node 1"].history] == [
            NodeState.UP,
            NodeState.DOWN,
            NodeState.UP,
        ]
    assert not mon.nodes.running and not mon.gpu.running  # the app stopped its monitors on exit


# -- which job runs where: the glue between a running experiment and the GPU monitor ----------------


def first_child(pid: int, deadline: float) -> int:
    """The first child of process `pid` (a job's `sleep`), waited for until `deadline`."""
    while True:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                children = [int(p) for p in f.read().split()]
        except OSError:
            children = []
        if children:
            return children[0]
        assert time.monotonic() < deadline, "the job's sleep did not start"
        time.sleep(0.02)


def test_a_running_jobs_gpu_process_is_matched_to_the_job(tmp_path):
    """A real local job on card 0: its card and its grandchild's GPU process both name its jid."""
    from aup_tui_backends.config import load_experiment
    from aup_tui_backends.experiment import Experiment
    from aup_tui_backends.setup import init_aup
    from helpers import write_experiment, write_script

    from aup_tui.monitoring import jobs_from_experiment

    init_aup(str(tmp_path / ".aup"), gpu=["0"])
    write_script(
        tmp_path,
        "job.sh",
        """
        sleep 30 &
        wait
        echo "#Auptimizer:1"
    """,
    )
    config = load_experiment(write_experiment(tmp_path, resource="gpu", n_parallel=1, n_samples=1))
    exp = Experiment(config, auppath=str(tmp_path / ".aup"))
    runner = threading.Thread(target=exp.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 15
        pids: dict[int, int] = {}
        while time.monotonic() < deadline and not pids:
            rm = exp.resource_manager
            pids = rm.job_pids() if rm is not None else {}
            time.sleep(0.02)
        assert pids, "the job did not start"
        ((jid, leader),) = pids.items()
        child = first_child(leader, deadline)

        source = jobs_from_experiment(exp)
        jobs, counts = source()
        assert list(jobs) == [JobProcessInfo(jid, leader, ("0",))] and counts == {}

        nvml = FakeNVML([FakeGPU(processes=[(child, GIB)]), FakeGPU(processes=[(1, GIB)])])
        mon = Monitoring(gpu=GPUMonitor(nvml=nvml, interval=0.05), jobs_source=source)
        got: list = []

        class Target:
            def post_message(self, message):
                got.append(message)

        target = Target()
        mon.subscribe(target)
        mon.start()
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(
                isinstance(m, GPUSampled) and m.snapshot.gpus[0].processes for m in got
            ):
                time.sleep(0.02)
        finally:
            mon.stop()
        snap = [m for m in got if isinstance(m, GPUSampled)][-1].snapshot
        assert snap.gpus[0].jobs == (jid,)
        assert snap.gpus[0].processes[0].jid == jid  # found by walking up to the job's process group
        assert snap.gpus[1].jobs == () and snap.gpus[1].processes[0].jid is None
        assert any(isinstance(m, NodesProbed) and m.statuses == {} for m in got)  # no nodes configured
    finally:
        exp.stop()
        runner.join(15)
    assert not runner.is_alive()


async def test_watching_a_headless_gpu_run_names_the_job_on_each_gpu_it_uses(tmp_path):
    """`aup-tui watch` runs in another process than the experiment: the job's card names the job,
    and so does another GPU one of the job's processes uses (matched by the pid the run recorded)."""
    import subprocess

    from aup_tui_backends.store import TinyDBConnector
    from helpers import cli, cli_popen, write_experiment, write_script

    assert cli("init", "--gpu", "0", cwd=tmp_path).returncode == 0
    write_script(
        tmp_path,
        "job.sh",
        """
        sleep 30 &
        wait
        echo "#Auptimizer:1"
    """,
    )
    write_experiment(tmp_path, resource="gpu", n_parallel=1, n_samples=1)
    proc = cli_popen(
        "run",
        "--headless",
        "experiment.json",
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    auppath = str(tmp_path / ".aup")
    conn = TinyDBConnector(auppath)
    try:
        deadline = time.monotonic() + 20
        job: dict = {}
        while not job.get("pid"):
            assert time.monotonic() < deadline, "the headless run recorded no pid"
            exp = conn.latest_experiment()
            job = next(iter(conn.jobs(exp["eid"])), {}) if exp else {}
            time.sleep(0.05)
        eid, jid, leader = exp["eid"], job["jid"], job["pid"]
        child = first_child(leader, deadline)

        # GPU 0 is the job's card (someone else's process on it); GPU 1 runs the job's `sleep`
        nvml = FakeNVML([FakeGPU(processes=[(1, GIB)]), FakeGPU(processes=[(child, GIB)]), FakeGPU()])
        app = AupApp(auppath, connector=conn, watch=eid)
        app.monitoring = Monitoring(gpu=GPUMonitor(nvml=nvml, interval=0.05))
        async with app.run_test(size=(120, 40)) as pilot:
            assert await wait_until(pilot, lambda: gpu_text(app).count(f"job {jid}") == 2), gpu_text(app)
            lines = gpu_text(app).splitlines()
            assert [f"job {jid}" in line for line in lines[1:4]] == [
                True,
                True,
                False,
            ]  # after the summary line
            await pilot.press("S", "y")
            assert await wait_until(pilot, lambda: proc.poll() is not None, timeout=20)
            await pilot.press("q")
        assert proc.returncode == 130
    finally:
        conn.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_watch_mode_counts_jobs_per_node_and_trusts_pids_only_from_this_host(tmp_path):
    """What the watch-mode panels are told: jobs per SSH node, each GPU job's card, and its pid
    only when the experiment runs on this machine (a store shared over NFS from another host)."""
    import socket

    from aup_tui_backends.setup import init_aup

    from aup_tui.monitoring import StateJobs
    from aup_tui.state import ExperimentState

    init_aup(str(tmp_path / ".aup"), gpu=["1"])  # resource 1 is card "1"
    jobs = [
        {"jid": 1, "status": "RUNNING", "resource": "gpu:gpu1", "rid": 1, "pid": 4321, "config": {}},
        {"jid": 2, "status": "RUNNING", "resource": "node:gpu-box", "rid": 4, "config": {}},
        {"jid": 3, "status": "RUNNING", "resource": "node:gpu-box", "rid": 4, "config": {}},
        {"jid": 4, "status": "FINISHED", "resource": "node:gpu-box", "rid": 4, "score": 1.0, "config": {}},
    ]
    state = ExperimentState()
    state.merge_store({"eid": 1, "status": "RUNNING", "host": socket.gethostname()}, jobs)
    source = StateJobs(state, str(tmp_path / ".aup"))
    assert source() == ([JobProcessInfo(1, 4321, ("1",))], {"node 4": 2})

    elsewhere = ExperimentState()
    elsewhere.merge_store({"eid": 1, "status": "RUNNING", "host": "another-machine"}, jobs)
    assert StateJobs(elsewhere, str(tmp_path / ".aup"))() == ([JobProcessInfo(1, 0, ("1",))], {"node 4": 2})


async def test_an_ssh_experiment_in_the_app_shares_its_node_connections_with_the_panel(sshd_server, tmp_path):  # noqa: F811
    """The nodes panel probes over the experiment's own connections: one connection to the node,
    checked against the experiment's known_hosts (not ~/.ssh/known_hosts, where this node is not)."""
    from aup_tui_backends.config import load_experiment
    from aup_tui_backends.setup import init_aup
    from aup_tui_backends.store import TinyDBConnector
    from helpers import write_experiment, write_script

    auppath = str(tmp_path / ".aup")
    init_aup(auppath, node=[sshd_server.mapping_value()])
    known_hosts = sshd_server.factory.write_known_hosts(tmp_path / "known_hosts", [sshd_server])
    gate = tmp_path / "go"  # the job ends once the test has seen it on the node
    write_script(
        tmp_path,
        "job.sh",
        f"""
        while [ ! -e {gate} ]; do sleep 0.05; done
        echo "#Auptimizer:1"
    """,
    )
    config = load_experiment(
        write_experiment(
            tmp_path,
            resource="node",
            n_parallel=1,
            n_samples=1,
            resource_args={"known_hosts": known_hosts, "connect_timeout": 5},
        )
    )
    conn = TinyDBConnector(auppath)
    app = AupApp(auppath, connector=conn, experiment=config)
    try:
        async with app.run_test(size=WIDE) as pilot:
            assert await wait_until(
                pilot,
                lambda: (
                    (node_rows(app).get("node 1") or [""])[1:2] == ["UP"]
                    and node_rows(app)["node 1"][5] == "1"
                ),
                timeout=20,
            ), node_rows(app)
            pool = app.experiment.resource_manager.pool
            assert app.monitoring.nodes.pool is pool
            assert pool.connect_count("node 1") == 1
            gate.touch()
            assert await wait_until(pilot, lambda: app.experiment.status == "FINISHED", timeout=20)
            await pilot.press("q")
    finally:
        conn.close()


async def test_the_command_palette_opens_a_node_and_probes_now():
    mon = StaticMonitoring(gpu_snapshot(), node_statuses())
    app = make_app(mon)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause(0.2)
        await pilot.press("ctrl+p", *"probe nodes")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert mon.retried == [None]
        await pilot.press("ctrl+p", *"node: node 2")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, NodeDetailScreen) and app.screen.node == "node 2"
