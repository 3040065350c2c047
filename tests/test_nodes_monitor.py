"""Node health and the SSH connection pool against real OpenSSH sshd servers on 127.0.0.1."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
from aup_tui_backends.config import HostSpec
from aup_tui_backends.monitors import NodeMonitor, NodeState, parse_probe_output, probe_resources
from aup_tui_backends.ssh import CommandTimeoutError, HostKeyChangedError, NodePool, UnknownHostKeyError
from fake_nvml import FakeGPU, FakeNVML
from sshd import free_port, slow_command_config, sshd_factory, sshd_server, sshd_servers  # noqa: F401

GIB = 1 << 30


def make_pool(servers, tmp_path, known=None, **kwargs):
    """A pool over ``servers`` (named n0, n1, …) with a known_hosts listing ``known``."""
    known_hosts = tmp_path / "known_hosts"
    servers[0].factory.write_known_hosts(known_hosts, servers if known is None else known)
    kwargs.setdefault("connect_timeout", 5)
    kwargs.setdefault("command_timeout", 10)
    return NodePool(
        {f"n{i}": s.spec() for i, s in enumerate(servers)}, known_hosts=str(known_hosts), **kwargs
    )


def wait_for(predicate, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def meminfo():
    values = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    return values


def test_importing_the_monitors_loads_no_paramiko_or_pynvml():
    """Loaded when a node is probed or a GPU sampled, not at import: a run-time check, as
    import-linter counts lazy imports too (that the engine never imports Textual is its contract)."""
    code = (
        "import aup_tui_backends.monitors, aup_tui_backends.ssh, aup_tui_backends.ssh.sftp, sys; "
        "bad = [m for m in ('paramiko', 'pynvml') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.getcwd())


def test_node_up_with_rtt_load_memory_and_jobs(sshd_server, tmp_path):
    with make_pool([sshd_server], tmp_path) as pool:
        monitor = NodeMonitor(pool, slow_rtt=5.0)
        assert monitor.statuses()["n0"].state is NodeState.UNKNOWN
        monitor.set_job_counts({"n0": 2})
        status = monitor.probe_once()["n0"]

    assert status.state is NodeState.UP, status.error
    assert status.host == str(sshd_server.spec()) == f"{sshd_server.spec().user}@127.0.0.1:{sshd_server.port}"
    assert 0 < status.rtt < 5.0
    assert status.load is not None and len(status.load) == 3 and all(x >= 0 for x in status.load)
    # the node is this machine: its memory is ours
    assert status.mem_total == meminfo()["MemTotal"]
    assert 0 < status.mem_available <= status.mem_total
    assert status.jobs == 2
    assert status.error == "" and status.failures == 0
    assert [c.state for c in status.history] == [NodeState.UP]
    assert status.since == status.history[0].at == status.checked
    assert "@@mem" in status.output
    if shutil.which("nvidia-smi") is None:  # absent: no GPUs, and that is not an error
        assert status.gpus == () and status.gpu_error == ""


def test_slow_node(sshd_server, tmp_path):
    with make_pool([sshd_server], tmp_path) as pool:
        status = NodeMonitor(pool, slow_rtt=0.0).probe_once()["n0"]
    assert status.state is NodeState.SLOW
    assert "over 0 ms" in status.history[-1].reason


FAKE_SMI = """#!/bin/sh
[ -e "$(dirname "$0")/smi.hang" ] && exec sleep 60
case "$*" in
  *--query-gpu=index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw*) ;;
  *) echo "unexpected arguments: $*" >&2; exit 2 ;;
esac
cat "$(dirname "$0")/smi.out"
exit "$(cat "$(dirname "$0")/smi.rc")"
"""


def test_remote_gpus_from_nvidia_smi(sshd_factory, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    (bin_dir / "smi.out").write_text(
        "0, NVIDIA A100-SXM4-40GB, 35, 10240, 40960, 45, 120.50\n"
        "1, NVIDIA A100-SXM4-40GB, 0, 0, 40960, 31, [N/A]\n"
    )
    (bin_dir / "smi.rc").write_text("0")
    server = sshd_factory.new(env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    try:
        with make_pool([server], tmp_path) as pool:
            monitor = NodeMonitor(pool)
            status = monitor.probe_once()["n0"]
            assert status.state is NodeState.UP, status.error
            g0, g1 = status.gpus
            assert (g0.index, g0.name, g0.utilization) == (0, "NVIDIA A100-SXM4-40GB", 35.0)
            assert (g0.memory_used, g0.memory_total) == (10 * GIB, 40 * GIB)
            assert (g0.temperature, g0.power_draw) == (45.0, 120.5)
            assert (g1.index, g1.utilization, g1.power_draw) == (1, 0.0, None)
            assert g0.history == (35.0,)

            (bin_dir / "smi.out").write_text("0, NVIDIA A100-SXM4-40GB, 90, 10240, 40960, 45, 300\n")
            status = monitor.probe_once()["n0"]
            assert len(status.gpus) == 1 and status.gpus[0].history == (35.0, 90.0)

            # nvidia-smi present but failing: no GPUs, the reason shown, the node still UP
            message = (
                "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
                "Make sure that the latest NVIDIA driver is installed and running."
            )
            (bin_dir / "smi.out").write_text(message + "\n")
            (bin_dir / "smi.rc").write_text("9")
            status = monitor.probe_once()["n0"]
            assert status.state is NodeState.UP
            assert status.gpus == () and status.gpu_error == message

        # a wedged nvidia-smi is cut short; the node stays UP
        (bin_dir / "smi.hang").touch()
        with make_pool([server], tmp_path, command_timeout=2.5) as pool:
            status = NodeMonitor(pool).probe_once()["n0"]
            assert status.state is NodeState.UP, status.error
            assert status.gpu_error == "nvidia-smi did not answer in time"
    finally:
        server.kill()


def test_parse_probe_output_other_systems():
    # no /proc (macOS, BSD): uptime's load, no memory, no nvidia-smi
    out = "10:01  up 3 days,  2:03, 2 users, load averages: 1.52 1.61 1.70\n@@mem\n@@gpu\n@@nosmi\n"
    parsed = parse_probe_output(out)
    assert parsed.load == (1.52, 1.61, 1.70)
    assert parsed.mem_total is None and parsed.gpus == () and parsed.gpu_error == ""
    out = " 10:01:02 up 1 day, load average: 0.00, 0.01, 0.05\n@@mem\n@@gpu\n@@nosmi\n"
    assert parse_probe_output(out).load == (0.0, 0.01, 0.05)


def test_killed_node_goes_down_within_two_intervals_and_comes_back(sshd_server, tmp_path):
    interval = 0.5
    pool = make_pool([sshd_server], tmp_path, connect_timeout=2, command_timeout=2)
    monitor = NodeMonitor(pool, interval=interval, max_backoff=2.0)
    updates = []
    changed = threading.Condition()

    def callback(statuses):
        with changed:
            updates.append((time.monotonic(), statuses["n0"]))
            changed.notify_all()

    def wait_state(state, timeout):
        with changed:
            ok = changed.wait_for(lambda: updates and updates[-1][1].state is state, timeout)
            return updates[-1] if ok else None

    monitor.start(callback)
    try:
        assert wait_state(NodeState.UP, 10), updates
        assert not monitor.is_down("n0") and not pool.is_down("n0")

        killed_at = time.monotonic()
        sshd_server.kill()
        down = wait_state(NodeState.DOWN, 10)
        assert down is not None, updates
        at, status = down
        assert at - killed_at <= 2 * interval
        assert f"127.0.0.1:{sshd_server.port}" in status.error
        assert monitor.is_down("n0") and pool.is_down("n0")
        assert status.since >= killed_at - 0.01

        sshd_server.start()
        up = wait_state(NodeState.UP, 10)
        assert up is not None, updates
        status = up[1]
        assert status.error == "" and status.last_error == down[1].error
        assert [c.state for c in status.history] == [NodeState.UP, NodeState.DOWN, NodeState.UP]
        assert not monitor.is_down("n0") and not pool.is_down("n0")
        assert pool.connect_count("n0") == 2  # reconnected once, then reused
    finally:
        monitor.stop()
        pool.close()
    assert not monitor.running


def test_a_change_in_job_counts_is_reported_without_waiting_for_a_probe(sshd_server, tmp_path):
    pool = make_pool([sshd_server], tmp_path)
    monitor = NodeMonitor(pool, interval=60.0)  # no second probe during this test
    got: list[dict] = []
    changed = threading.Condition()

    def callback(statuses):
        with changed:
            got.append({name: s.jobs for name, s in statuses.items()})
            changed.notify_all()

    monitor.start(callback)
    try:
        with changed:
            assert changed.wait_for(lambda: got, 10)
        monitor.set_job_counts({"n0": 2})
        with changed:
            assert changed.wait_for(lambda: got[-1] == {"n0": 2}, 2), got
        n = len(got)
        monitor.set_job_counts({"n0": 2})  # no change: nothing to report
        time.sleep(0.2)
        assert len(got) == n
    finally:
        monitor.stop()
        pool.close()


def test_down_node_backoff_is_exponential_and_capped(tmp_path):
    clock = [100.0]
    pool = NodePool(
        {"dead": HostSpec(user="nobody", host="127.0.0.1", port=free_port())},
        known_hosts=str(tmp_path / "kh"),
        connect_timeout=1,
    )
    monitor = NodeMonitor(pool, interval=1.0, max_backoff=5.0, clock=lambda: clock[0])
    delays = []
    for _ in range(6):
        status = monitor.probe_once()["dead"]
        assert status.state is NodeState.DOWN
        delays.append(status.next_probe - status.checked)
        clock[0] += 100
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert status.failures == 6
    assert len(status.history) == 1  # one state change, not one per failure


def test_changed_host_key_is_refused_clearly(sshd_server, tmp_path):
    with make_pool([sshd_server], tmp_path) as pool:
        monitor = NodeMonitor(pool)
        assert monitor.probe_once()["n0"].state is NodeState.UP
        sshd_server.regenerate_host_key()
        sshd_server.restart()
        status = monitor.probe_once()["n0"]
        known_hosts = str(tmp_path / "known_hosts")
        assert status.state is NodeState.DOWN
        assert status.error.startswith(
            f"host key for 127.0.0.1:{sshd_server.port} changed — remove the old key from {known_hosts} "
            "if this is expected"
        )
        with pytest.raises(HostKeyChangedError):
            pool.get_client("n0")
    # accepting new hosts never accepts a changed key
    with make_pool([sshd_server], tmp_path, known=[], accept_new_hosts=True) as pool:
        (tmp_path / "known_hosts").write_text(
            f"[127.0.0.1]:{sshd_server.port} ssh-ed25519 "
            "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
        )
        with pytest.raises(HostKeyChangedError, match="changed"):
            pool.get_client("n0")


def test_unknown_host_is_refused_unless_new_hosts_are_accepted(sshd_server, tmp_path):
    known_hosts = tmp_path / "ssh" / "known_hosts"  # does not exist yet
    spec = sshd_server.spec()
    with NodePool({"n": spec}, known_hosts=str(known_hosts)) as pool:
        with pytest.raises(UnknownHostKeyError) as info:
            pool.get_client("n")
        assert str(info.value).startswith(f"host key for 127.0.0.1:{sshd_server.port} is unknown")
        assert f"ssh-keyscan -p {sshd_server.port} 127.0.0.1" in str(info.value)
        assert NodeMonitor(pool).probe_once()["n"].state is NodeState.DOWN
    assert not known_hosts.exists()  # nothing written

    # explicit opt-in: accepted, and the key appended (existing lines kept as they were)
    known_hosts.parent.mkdir()
    original = "# my hosts\nexample.org ssh-unknown-type AAAA"  # no final newline
    known_hosts.write_text(original)
    with NodePool({"n": spec}, known_hosts=str(known_hosts), accept_new_hosts=True) as pool:
        assert NodeMonitor(pool).probe_once()["n"].state is NodeState.UP
    assert known_hosts.read_text() == original + "\n" + sshd_server.known_hosts_line() + "\n"

    # and from now on it is known without the option
    with NodePool({"n": spec}, known_hosts=str(known_hosts)) as pool:
        assert NodeMonitor(pool).probe_once()["n"].state is NodeState.UP


def test_connection_is_reused_and_can_be_borrowed(sshd_server, tmp_path):
    with make_pool([sshd_server], tmp_path) as pool:
        monitor = NodeMonitor(pool)
        monitor.probe_once()
        transport = pool.get_transport("n0")
        for _ in range(3):
            assert monitor.probe_once()["n0"].state is NodeState.UP
        assert pool.get_transport("n0") is transport
        assert pool.connect_count("n0") == 1
        # the resource manager borrows the same connection to run commands
        chan = pool.open_channel("n0")
        try:
            chan.exec_command("echo borrowed")
            assert chan.makefile("rb").read() == b"borrowed\n"
            assert chan.recv_exit_status() == 0
        finally:
            chan.close()
        assert pool.get_client("n0").get_transport() is transport
        assert pool.connect_count("n0") == 1


def test_run_quotes_separates_streams_and_times_out(sshd_server, tmp_path):
    with make_pool([sshd_server], tmp_path) as pool:
        tricky = 'a b\'c $HOME `x` "q"'
        assert pool.run("n0", "printf %s " + shlex.quote(tricky)) == (0, tricky, "")
        assert pool.run("n0", "sh -c " + shlex.quote("echo out; echo err >&2; exit 3")) == (
            3,
            "out\n",
            "err\n",
        )
        big = pool.run("n0", "head -c 3000000 /dev/zero | tr '\\0' x; head -c 500000 /dev/zero >&2")
        assert (big[0], len(big[1]), len(big[2])) == (0, 3_000_000, 500_000)

        started = time.monotonic()
        with pytest.raises(
            CommandTimeoutError, match=f"timed out after 0.3 s on .*127.0.0.1:{sshd_server.port}"
        ):
            pool.run("n0", "sleep 30", timeout=0.3)
        assert time.monotonic() - started < 3
        assert pool.run("n0", "echo still usable") == (0, "still usable\n", "")
        assert pool.connect_count("n0") == 1


def test_nothing_listening_is_down_at_once(tmp_path):
    port = free_port()
    with NodePool(
        {"gone": HostSpec(user="root", host="127.0.0.1", port=port)},
        known_hosts=str(tmp_path / "kh"),
        connect_timeout=5,
    ) as pool:
        started = time.monotonic()
        status = NodeMonitor(pool).probe_once()["gone"]
    assert time.monotonic() - started < 2
    assert status.state is NodeState.DOWN
    assert status.error == f"cannot connect to root@127.0.0.1:{port}: connection refused"


def test_silent_host_never_hangs(tmp_path):
    """A host that accepts TCP but never speaks SSH: DOWN after the connect timeout."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    try:
        with NodePool(
            {"mute": HostSpec(user="root", host="127.0.0.1", port=port)},
            known_hosts=str(tmp_path / "kh"),
            connect_timeout=0.5,
            command_timeout=0.5,
        ) as pool:
            started = time.monotonic()
            status = NodeMonitor(pool).probe_once()["mute"]
            elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert status.state is NodeState.DOWN
    assert status.error.startswith(f"cannot connect to root@127.0.0.1:{port}")
    assert elapsed < 5


def test_missing_key_file_is_named(sshd_server, tmp_path):
    spec = HostSpec(user="root", host="127.0.0.1", port=sshd_server.port, key=str(tmp_path / "nokey"))
    with NodePool({"n": spec}, known_hosts=str(tmp_path / "kh")) as pool:
        status = NodeMonitor(pool).probe_once()["n"]
    assert status.state is NodeState.DOWN
    assert status.error.startswith(f"the private key {tmp_path / 'nokey'} for root@127.0.0.1:")


@pytest.fixture(scope="module")
def slow_servers(sshd_factory):
    """16 nodes that each take 0.25 s more for every command."""
    servers = sshd_factory.start_many(16, extra_config=slow_command_config(0.25))
    yield servers
    for server in servers:
        server.kill()


def test_sixteen_nodes_are_probed_concurrently(slow_servers, tmp_path):
    with make_pool(slow_servers, tmp_path) as pool:
        monitor = NodeMonitor(pool, slow_rtt=10)
        monitor.probe_once()  # connect all (steady state: connections are reused)
        started = time.monotonic()
        monitor.probe_once(["n0"])
        one = time.monotonic() - started
        started = time.monotonic()
        statuses = monitor.probe_once()
        round_time = time.monotonic() - started
    assert all(s.state is NodeState.UP for s in statuses.values()), statuses
    assert one >= 0.5  # two commands per probe, each delayed 0.25 s
    # all 16 together take about one node's time, far from the sum of 16
    assert round_time < 4 * one, (round_time, one)


def test_probe_resources_lines(sshd_server, tmp_path):
    aup = tmp_path / ".aup"
    aup.mkdir()
    dead = free_port()
    key = sshd_server.factory.client_key
    (aup / "env.ini").write_text(
        "[Auptimizer]\n"
        f"Auptimizer_PATH = {aup}\n"
        "SQL_ENGINE = tinydb\n"
        f'node_mapping = {{"1": "{sshd_server.mapping_value()}", "2": "root@127.0.0.1:{dead} {key}"}}\n'
        f'aws_mapping = {{"3": "ubuntu@i-0123456789abcdef0 {key}"}}\n'
    )
    known_hosts = sshd_server.factory.write_known_hosts(tmp_path / "known_hosts", [sshd_server])
    nvml = FakeNVML(
        [
            FakeGPU(
                name="NVIDIA A100",
                util=35,
                mem_used=10 * GIB,
                mem_total=40 * GIB,
                temp=45,
                power_mw=120_000,
                power_limit_mw=400_000,
            )
        ]
    )
    nvml.gpus[0].uuid = "GPU-1"
    started = time.monotonic()
    lines = probe_resources(str(aup), timeout=2, nvml=nvml, known_hosts=known_hosts)
    assert time.monotonic() - started < 10
    assert len(lines) == 4, lines
    assert lines[0].startswith(f"node 1  {sshd_server.spec()}  UP  rtt ")
    assert " load " in lines[0] and " mem " in lines[0] and "jobs 0" in lines[0]
    assert (
        lines[1]
        == f"node 2  root@127.0.0.1:{dead}  DOWN  cannot connect to root@127.0.0.1:{dead}: connection refused"
    )
    assert lines[2] == "aws 3  ubuntu@i-0123456789abcdef0:22  not resolved (EC2 instance id)"
    assert lines[3] == "local GPU 0 NVIDIA A100 35% 10.0/40.0 GiB 45°C 120/400 W"

    nvml.init_error = nvml.NVMLError_DriverNotLoaded()
    lines = probe_resources(str(aup), timeout=2, nvml=nvml, known_hosts=known_hosts)
    assert lines[-1] == "local GPUs: none — Driver Not Loaded"


def test_the_tui_monitor_and_resources_probe_read_the_same_hosts_from_env_ini(tmp_path):
    """env.ini is read into host specs in one place: the TUI's node monitor and
    `aup-tui resources --probe` probe the same hosts under the same keys."""
    from aup_tui_backends.config import load_env
    from aup_tui_backends.ssh import env_hosts, host_label

    from aup_tui.monitoring import nodes_from_env

    aup = tmp_path / ".aup"
    aup.mkdir()
    dead = [free_port() for _ in range(3)]
    (aup / "env.ini").write_text(
        "[Auptimizer]\n"
        f"Auptimizer_PATH = {aup}\n"
        "SQL_ENGINE = tinydb\n"
        f'node_mapping = {{"1": "me@127.0.0.1:{dead[0]}", "2": "127.0.0.1:{dead[1]} ~/k", "5": "me@127.0.0.1"}}\n'
        f'aws_mapping = {{"3": "ubuntu@i-0123456789abcdef0", "4": "ubuntu@127.0.0.1:{dead[2]} /k"}}\n'
    )
    specs = nodes_from_env(str(aup))
    assert specs == {
        "node 1": HostSpec("me", "127.0.0.1", dead[0]),
        "node 2": HostSpec(None, "127.0.0.1", dead[1], os.path.expanduser("~/k")),
        "node 5": HostSpec("me", "127.0.0.1", 22),
        "aws 4": HostSpec("ubuntu", "127.0.0.1", dead[2], "/k"),
    }
    hosts = env_hosts(load_env(str(aup)))
    assert [(h.key, h.name) for h in hosts] == [
        ("node 1", f"127.0.0.1:{dead[0]}"),
        ("node 2", f"127.0.0.1:{dead[1]}"),
        ("node 5", "127.0.0.1"),  # port 22 is not named
        ("aws 3", "i-0123456789abcdef0"),
        ("aws 4", f"127.0.0.1:{dead[2]}"),
    ]
    # the probe: port 22 may answer on this machine; only the dead ports' lines are checked whole
    lines = probe_resources(str(aup), timeout=1, nvml=FakeNVML([]), known_hosts=str(tmp_path / "kh"))
    probed = {line.split("  ")[0]: line.split("  ")[1] for line in lines[:5]}
    assert probed == {key: host_label(spec) for key, spec in specs.items()} | {
        "aws 3": "ubuntu@i-0123456789abcdef0:22"
    }
    for key in ("node 1", "node 2", "aws 4"):  # a closed port, a missing key file
        assert next(line for line in lines if line.startswith(key + "  ")).startswith(
            f"{key}  {probed[key]}  DOWN  "
        )
