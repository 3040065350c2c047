"""Ray is an optional extra: `aup-tui init --ray [ADDRESS]` writes env.ini, a Ray experiment
without Ray installed gets one message saying how to install it, and nothing else loads Ray."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from helpers import ROOT, cli, write_experiment
from sshd import free_port

HIDE_RAY = "import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed


def run_python(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )


def env_ini(folder) -> str:
    return (folder / ".aup" / "env.ini").read_text()


def test_init_ray_writes_the_address_and_job_slots(tmp_path):
    done = cli("init", "--ray", "auto", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "32 ray" in done.stdout
    assert "ray_address = auto" in env_ini(tmp_path)
    assert "n_ray = 32" in env_ini(tmp_path)
    listing = cli("resources", cwd=tmp_path).stdout
    assert "ray      ray0" in listing and "ray      ray31" in listing


def test_init_ray_without_an_address_means_a_local_ray(tmp_path):
    assert cli("init", "--cpu", "1", "--ray", cwd=tmp_path).returncode == 0
    text = env_ini(tmp_path)
    assert "ray_address = \n" in text or "ray_address =\n" in text
    assert "n_cpu = 1" in text


def test_a_ray_experiment_without_ray_gets_one_message_saying_how_to_install_it(tmp_path):
    assert cli("init", "--ray", cwd=tmp_path).returncode == 0
    write_experiment(tmp_path, resource="ray")
    done = run_python(
        HIDE_RAY + "from aup_tui.cli import main; sys.exit(main(['run', '--headless', 'experiment.json']))",
        tmp_path,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert 'needs Ray, which is not installed — pip install "aup-tui[ray]"' in lines[0]
    assert "experiment.json" in lines[0]


def test_the_ray_manager_from_the_library_without_ray_says_the_same(tmp_path):
    done = run_python(
        HIDE_RAY
        + f"""
from aup_tui_backends import get_default_connector
from aup_tui_backends.errors import ConfigError
from aup_tui_backends.resources import get_resource_manager
try:
    get_resource_manager("ray", get_default_connector({str(tmp_path / ".aup")!r}), 1)
except ConfigError as exc:
    print(exc)
""",
        tmp_path,
    )
    assert 'pip install "aup-tui[ray]"' in done.stdout, done.stderr


def test_a_cpu_experiment_and_the_cli_never_import_ray(tmp_path):
    assert cli("init", "--cpu", "2", cwd=tmp_path).returncode == 0
    (tmp_path / "job.sh").write_text('#!/bin/sh\necho "#Auptimizer:1"\n')
    (tmp_path / "job.sh").chmod(0o755)
    write_experiment(tmp_path, n_samples=2)
    done = run_python(
        """
        import sys
        import aup_tui.app, aup_tui.monitoring  # the TUI, its monitors and nodes panel too
        from aup_tui.cli import main
        code = main(['run', '--headless', 'experiment.json'])
        main(['resources', '--probe'])
        print('ray' in sys.modules, code)
        """,
        tmp_path,
    )
    assert done.stdout.strip().splitlines()[-1] == "False 0", done.stdout + done.stderr


async def test_the_nodes_panel_shows_ray_nodes_alive_and_dead_with_cpus_and_gpus_in_use(utc):
    """The rows RayClusterMonitor hands the dashboard: UP with CPUs and GPUs in use of total, and
    a dead node DOWN with Ray's reason (built here from fixed nodes; Ray itself is not needed)."""
    from aup_tui_backends.monitors.ray_cluster import RayNode, node_statuses
    from panel_scenes import gpu_snapshot
    from scenes import CLOCK, demo_state
    from test_panels import WIDE, node_rows
    from textual.widgets import DataTable

    from aup_tui.app import AupApp
    from aup_tui.monitoring import StaticMonitoring
    from aup_tui.screens.node_detail import NodeDetailScreen
    from aup_tui.widgets.nodes_panel import NodesPanel

    nodes = [
        RayNode("a1" * 28, "10.0.0.1", True, head=True, cpus_used=0, gpus_used=0, memory=8 << 30),
        RayNode("b2" * 28, "10.0.0.2", True, cpus=8, cpus_used=3, gpus=2, gpus_used=1),
        RayNode("c3" * 28, "10.0.0.3", False, cpus=8, reason="The node was killed: raylet died"),
    ]
    statuses = node_statuses(nodes, jobs={"b2" * 28: 3}, now=CLOCK())
    app = AupApp(state=demo_state(), clock=CLOCK, find=False)
    app.monitoring = StaticMonitoring(gpu_snapshot(), statuses)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause(0.2)
        rows = node_rows(app)
        # no RTT or load columns (Ray's state has none): the room goes to what is in use
        table = app.screen.query_one(NodesPanel).query_one(DataTable)
        labels = [str(c.label.plain) for c in table.columns.values()]
        assert "RTT" not in labels and "Load" not in labels and labels[-1] == "In use"
        cells = {name: dict(zip(labels, row)) for name, row in rows.items()}
        assert cells["ray b2b2b2"]["State"] == "UP" and cells["ray b2b2b2"]["Jobs"] == "3"
        assert cells["ray b2b2b2"]["In use"] == "CPU 3/8 GPU 1/2"
        assert cells["ray a1a1a1"]["In use"] == "CPU 0/0 GPU 0/0"
        assert cells["ray c3c3c3"]["State"] == "DOWN"
        assert cells["ray c3c3c3"]["In use"] == "The node was killed: raylet died"
        # its detail says the same, wherever the table's columns were cut
        table.focus()
        table.move_cursor(row=table.get_row_index("ray b2b2b2"))
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, NodeDetailScreen)
        title = str(app.screen.query_one("#node-title").render())
        assert "10.0.0.2" in title and "jobs 3" in title and "CPU 3/8 GPU 1/2" in title


def test_an_address_nobody_listens_on_is_one_message_at_once(tmp_path):
    import time

    port = free_port()  # nothing listens there
    assert cli("init", "--ray", f"127.0.0.1:{port}", cwd=tmp_path).returncode == 0
    write_experiment(tmp_path, resource="ray")
    start = time.monotonic()
    done = cli("run", "--headless", "experiment.json", cwd=tmp_path)
    assert time.monotonic() - start < 30  # not Ray's minutes of retries
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"aup-tui: cannot reach the Ray cluster at 127.0.0.1:{port} (Connection refused): start it "
        "(`ray start --head`) or fix ray_address in env.ini (`aup-tui init --overwrite --ray ADDRESS`)"
    ]


def test_probe_of_an_address_nobody_listens_on_is_one_line_at_once(tmp_path):
    import time

    port = free_port()  # nothing listens there
    assert cli("init", "--ray", f"127.0.0.1:{port}", cwd=tmp_path).returncode == 0
    start = time.monotonic()
    done = cli("resources", "--probe", cwd=tmp_path)
    assert time.monotonic() - start < 30  # not Ray's minute of retries
    assert done.returncode == 0
    assert (
        f"Ray: cannot reach the Ray cluster at 127.0.0.1:{port} (Connection refused): start it "
        "(`ray start --head`) or fix ray_address in env.ini (`aup-tui init --overwrite --ray ADDRESS`)"
    ) in done.stdout.splitlines()
    assert "GCS" not in done.stdout + done.stderr  # none of Ray's own retry logging


def test_probe_says_a_local_ray_has_nothing_to_probe(tmp_path):
    assert cli("init", "--ray", cwd=tmp_path).returncode == 0
    done = cli("resources", "--probe", cwd=tmp_path)
    assert "Ray: local — a Ray instance starts with each run" in done.stdout
