"""The SSH node manager against real OpenSSH sshd servers on 127.0.0.1 (see sshd.py)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from aup_tui_backends import Experiment
from aup_tui_backends.config import load_experiment
from aup_tui_backends.errors import ConfigError
from aup_tui_backends.events import EventBus, JobIntermediate, JobStarted
from aup_tui_backends.jobs import Job
from aup_tui_backends.monitors import NodeMonitor
from aup_tui_backends.resources import get_resource_manager
from aup_tui_backends.resources.ssh import SSHResourceManager
from aup_tui_backends.setup import init_aup
from aup_tui_backends.ssh import NodeError, NodePool
from aup_tui_backends.store import TinyDBConnector
from helpers import ROOT, pid_alive, write_experiment, write_script
from sshd import sshd_factory, sshd_server, sshd_servers  # noqa: F401  (fixtures)

ROSENBROCK = ROOT / "examples" / "rosenbrock" / "rosenbrock.py"
FAST = {"reconn_wait_time": 0.2, "max_retries": 1, "kill_grace": 0.5, "connect_timeout": 5}


def wait_for(predicate, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def node_folder(tmp_path: Path, servers, script: bool = True, slots: int = 1) -> Path:
    """A working folder with `.aup/` listing `servers` as nodes (`slots` resources each), a
    known_hosts and rosenbrock.py."""
    folder = tmp_path / "work"
    folder.mkdir()
    init_aup(str(folder / ".aup"), node=[s.mapping_value() for s in servers for _ in range(slots)])
    servers[0].factory.write_known_hosts(folder / "known_hosts", servers)
    if script:
        shutil.copy(ROSENBROCK, folder / "rosenbrock.py")
    return folder


def rosenbrock_experiment(folder: Path, n: int, delay: float = 0.02, steps: int = 3, **overrides) -> Path:
    resource_args = {"known_hosts": str(folder / "known_hosts"), **FAST, **overrides.pop("resource_args", {})}
    return write_experiment(
        folder,
        script="./rosenbrock.py",
        resource="node",
        n_samples=n,
        target="min",
        parameter_config=[
            {"name": "x", "range": [-2, 2], "type": "float"},
            {"name": "y", "range": [-2, 2], "type": "float"},
            {"name": "delay", "range": [delay], "type": "choice"},
            {"name": "steps", "range": [steps], "type": "choice"},
        ],
        resource_args=resource_args,
        **overrides,
    )


def run_experiment(path: Path, folder: Path, bus: EventBus | None = None) -> tuple[Experiment, object]:
    exp = Experiment(load_experiment(path), auppath=str(folder / ".aup"), bus=bus)
    return exp, exp.run()


def rosen(x: float, y: float) -> float:
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def group_processes(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid` on this machine (the loopback node)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry))
    return found


# -- end to end --------------------------------------------------------------------------------


def test_twenty_rosenbrock_jobs_over_two_nodes_all_recorded(sshd_servers, tmp_path):
    servers = sshd_servers[:2]
    folder = node_folder(tmp_path, servers)
    bus = EventBus()
    started, intermediate = [], []
    bus.subscribe(
        lambda e: (
            started.append(e)
            if isinstance(e, JobStarted)
            else intermediate.append(e)
            if isinstance(e, JobIntermediate)
            else None
        )
    )
    exp, result = run_experiment(rosenbrock_experiment(folder, 20, n_parallel=4), folder, bus)
    assert result.status == "FINISHED", exp.connector.errors(result.eid)
    jobs = exp.connector.jobs(result.eid)
    assert len(jobs) == 20 and all(j["status"] == "FINISHED" for j in jobs)
    for j in jobs:
        assert j["score"] == pytest.approx(rosen(j["config"]["x"], j["config"]["y"]), rel=1e-5, abs=1e-5)
        local_log = (folder / "jobs" / f"{j['jid']}.1.out").read_text()
        assert local_log.count("#Auptimizer:") == 3 and "@@aup" not in local_log
        remote_log = (folder / "jobs" / f"{j['jid']}.1.remote.out").read_text()  # the node's copy
        assert remote_log == local_log
        assert exp.connector.intermediate_results(result.eid, j["jid"])
    assert {e.resource for e in started} == {f"node:127.0.0.1:{s.port}" for s in servers}  # host:port
    assert len(intermediate) == 60
    assert result.best_score == min(j["score"] for j in jobs)


def test_a_node_killed_mid_run_has_its_jobs_retried_on_the_other(sshd_factory, sshd_servers, tmp_path):
    victim = sshd_factory.new()
    try:
        folder = node_folder(tmp_path, [victim, sshd_servers[2]])
        path = rosenbrock_experiment(
            folder,
            12,
            delay=0.15,
            steps=4,
            n_parallel=4,
            job_failure={"ignore_fail": False, "job_retries": 2},
        )
        bus = EventBus()
        on_victim = threading.Event()
        bus.subscribe(
            lambda e: (
                on_victim.set() if isinstance(e, JobStarted) and str(victim.port) in e.resource else None
            )
        )
        exp = Experiment(load_experiment(path), auppath=str(folder / ".aup"), bus=bus)
        thread = threading.Thread(target=exp.run)
        thread.start()
        assert on_victim.wait(20)
        time.sleep(0.3)
        victim.kill()
        thread.join(90)
        assert not thread.is_alive()
        result = exp.result()
        jobs = exp.connector.jobs(result.eid)
        assert result.status == "FINISHED", exp.connector.errors(result.eid)
        assert len(jobs) == 12 and all(j["status"] == "FINISHED" for j in jobs)
        retried = [j for j in jobs if len(j["attempts"]) > 1]
        assert retried, "no job was running on the killed node"
        for j in retried:  # finished on the surviving node
            assert str(sshd_servers[2].port) in j["resource"]
            assert "lost the connection" in (folder / "jobs" / f"{j['jid']}.1.out").read_text()
    finally:
        victim.kill()


def test_async_job_survives_the_connection_cut_and_restored(sshd_server, tmp_path):
    folder = node_folder(tmp_path, [sshd_server], slots=2)
    path = rosenbrock_experiment(
        folder,
        2,
        delay=0.5,
        steps=4,
        n_parallel=2,
        resource_args={
            "async_run": True,
            "async_reconnect": 0.2,
            "async_timeout": 60,
            "reconn_wait_time": 0.5,
            "max_retries": 10,
        },
    )
    bus = EventBus()
    first = threading.Event()
    bus.subscribe(lambda e: first.set() if isinstance(e, JobIntermediate) else None)
    exp = Experiment(load_experiment(path), auppath=str(folder / ".aup"), bus=bus)
    thread = threading.Thread(target=exp.run)
    thread.start()
    assert first.wait(20)
    sshd_server.kill()  # every SSH session dies; the detached jobs do not
    time.sleep(1.0)
    sshd_server.start()
    thread.join(60)
    assert not thread.is_alive()
    result = exp.result()
    jobs = exp.connector.jobs(result.eid)
    assert result.status == "FINISHED", exp.connector.errors(result.eid)
    assert all(j["status"] == "FINISHED" and len(j["attempts"]) == 1 for j in jobs)
    for j in jobs:
        assert j["score"] == pytest.approx(rosen(j["config"]["x"], j["config"]["y"]), rel=1e-5, abs=1e-5)
        local_log = (folder / "jobs" / f"{j['jid']}.1.out").read_text()
        assert local_log.count("#Auptimizer:") == 4
        assert "lost the connection" in local_log
        assert len(exp.connector.intermediate_results(result.eid, j["jid"])) == 4


def test_early_stopping_kills_lagging_jobs_on_the_node(sshd_servers, tmp_path):
    folder = node_folder(tmp_path, [sshd_servers[14]], slots=2)
    path = rosenbrock_experiment(
        folder,
        8,
        delay=0.15,
        steps=8,
        n_parallel=2,
        resource_args={"early_stop": {"aup_policy": "median", "aup_policy_steps": 2, "warmup": 2}},
    )
    exp, result = run_experiment(path, folder)
    jobs = exp.connector.jobs(result.eid)
    assert result.status == "FINISHED", exp.connector.errors(result.eid)
    stopped = [j for j in jobs if j["status"] == "EARLY_STOPPED"]
    assert stopped and len(stopped) < len(jobs)
    for j in stopped:
        assert len(exp.connector.intermediate_results(result.eid, j["jid"])) < 8
        pgid = int((folder / "jobs" / f"{j['jid']}.1.remote.pid").read_text())
        assert not group_processes(pgid)


# -- managers on their own -------------------------------------------------------------------------


def make_manager(folder: Path, n_parallel: int = 1, **kwargs) -> SSHResourceManager:
    connector = TinyDBConnector(str(folder / ".aup"))
    options = {"known_hosts": str(folder / "known_hosts"), **FAST, **kwargs}
    rm = get_resource_manager("node", connector, n_parallel, auppath=str(folder / ".aup"), eid=1, **options)
    assert isinstance(rm, SSHResourceManager)
    return rm


def start_job(
    rm: SSHResourceManager,
    folder: Path,
    script: str,
    config: dict,
    runtime_args=None,
    workingdir: str | None = None,
):
    """Run `script` (in `folder` here) as a job; `workingdir`: the experiment's folder on the node
    (None: the same path as `folder`)."""
    done = threading.Event()
    job = Job(script, config, path=str(folder), retries=0)
    job.jid = rm.connector.new_jid()
    rid = rm.get_available("me", "node")
    assert rid is not None
    exp_config = type("Cfg", (), {"runtime_args": runtime_args or {}, "remote_workingdir": workingdir})()
    rm.run_job(job, rid, exp_config, lambda score, jid: done.set())
    return job, done


@pytest.mark.parametrize("async_run", [False, True], ids=["sync", "async"])
def test_stop_kills_the_whole_process_group_on_the_node(sshd_servers, tmp_path, async_run):
    folder = node_folder(tmp_path, [sshd_servers[3]], script=False)
    write_script(
        folder,
        "spawn.sh",
        """
        sleep 300 &
        echo "child $!"
        echo "#Auptimizer:1"
        sleep 300
    """,
    )
    rm = make_manager(folder, async_run=async_run, async_reconnect=0.1)
    try:
        job, done = start_job(rm, folder, "./spawn.sh", {"x": 1})
        log = folder / "jobs" / f"{job.jid}.1.out"
        assert wait_for(lambda: log.exists() and "child" in log.read_text(), 20)
        child = int(log.read_text().split("child ")[1].split()[0])
        state = rm._states[job.jid]
        pgid = state.pgid
        assert pgid and pid_alive(child) and child in group_processes(pgid)
        assert rm.stop_job(job.jid)
        assert done.wait(20)
        assert wait_for(lambda: not group_processes(pgid), 5), group_processes(pgid)
        assert not pid_alive(child)
        assert state.kill_result == "gone"  # the manager checked on the node too
        from aup_tui_backends.remote import alive_command

        assert rm.pool.run(state.name, alive_command(pgid))[1].strip() == "gone"  # and so do we, over SSH
        record = rm.connector.get_job(job.jid)
        assert record["status"] == "STOPPED" and record["score"] == 1
    finally:
        rm.finish()


def test_parameter_with_quotes_and_semicolons_arrives_intact_and_runs_nothing(sshd_servers, tmp_path):
    folder = node_folder(tmp_path, [sshd_servers[4]], script=False)
    write_script(
        folder,
        "echo config.sh",
        """
        cat "$1"; echo
        echo "env=[$TRICKY]"
        echo "#Auptimizer:2"
    """,
    )
    marker = tmp_path / "pwned"
    evil = f"""a'b"c; touch {marker}; $(touch {marker}) `touch {marker}` && echo x"""
    odd_dir = tmp_path / 'it\'s a "dir"; $(touch pwned)'
    rm = make_manager(folder)
    try:
        job, done = start_job(
            rm,
            folder,
            "./echo config.sh",
            {"name": evil},
            runtime_args={"env": {"TRICKY": evil}},
            workingdir=str(odd_dir),
        )
        assert done.wait(20)
        record = rm.connector.get_job(job.jid)
        assert record["status"] == "FINISHED", record
        out = (folder / "jobs" / f"{job.jid}.1.out").read_text()
        config = json.loads(out.splitlines()[0])
        assert config["name"] == evil
        assert f"env=[{evil}]" in out
        assert json.loads((odd_dir / "jobs" / f"{job.jid}.json").read_text())["name"] == evil
        assert not marker.exists() and not (odd_dir / "pwned").exists() and not (folder / "pwned").exists()
    finally:
        rm.finish()


def test_script_is_uploaded_to_a_remote_working_folder_and_kept_executable(sshd_servers, tmp_path):
    folder = node_folder(tmp_path, [sshd_servers[5]], script=False)
    write_script(
        folder,
        "job.sh",
        """
        echo "cwd=$(pwd) pre=$PRE"
        echo "#Auptimizer:3"
    """,
    )
    remote_wd = tmp_path / "remote side"
    rm = make_manager(folder)
    try:
        job, done = start_job(
            rm,
            folder,
            "./job.sh",
            {"x": 1},
            runtime_args={"prescript": "export PRE=yes", "postscript": "touch post.done"},
            workingdir=str(remote_wd),
        )
        assert done.wait(20)
        assert rm.connector.get_job(job.jid)["status"] == "FINISHED"
        assert os.access(remote_wd / "job.sh", os.X_OK)
        assert json.loads((remote_wd / "jobs" / f"{job.jid}.json").read_text()) == {"x": 1, "job_id": job.jid}
        assert f"cwd={remote_wd} pre=yes" in (folder / "jobs" / f"{job.jid}.1.out").read_text()
        assert (remote_wd / "post.done").exists()
        assert (remote_wd / "jobs" / f"{job.jid}.1.remote.out").exists()
        # not overwritten unless asked: a changed local script stays local
        write_script(folder, "job.sh", 'echo "#Auptimizer:4"\n')
        job2, done2 = start_job(rm, folder, "./job.sh", {"x": 2}, workingdir=str(remote_wd))
        assert done2.wait(20) and rm.connector.get_job(job2.jid)["score"] == 3
    finally:
        rm.finish()
        rm.connector.close()
    rm = make_manager(folder)
    try:
        job3, done3 = start_job(
            rm, folder, "./job.sh", {"x": 3}, runtime_args={"overwrite": True}, workingdir=str(remote_wd)
        )
        assert done3.wait(20) and rm.connector.get_job(job3.jid)["score"] == 4
    finally:
        rm.finish()


def test_failing_job_and_missing_script_give_clear_errors(sshd_servers, tmp_path):
    folder = node_folder(tmp_path, [sshd_servers[6]], script=False)
    write_script(folder, "fail.sh", 'echo "#Auptimizer:0.5"\necho boom >&2\nexit 3\n')
    rm = make_manager(folder)
    try:
        job, done = start_job(rm, folder, "./fail.sh", {})
        assert done.wait(20)
        record = rm.connector.get_job(job.jid)
        assert record["status"] == "FAILED" and record["score"] == 0.5
        assert "fail.sh exited with status 3 on" in record["error"] and "boom" in record["error"]
        job, done = start_job(rm, folder, "./nope.sh", {})
        assert done.wait(20)
        assert "job script" in rm.connector.get_job(job.jid)["error"]
        assert "not found here nor as" in rm.connector.get_job(job.jid)["error"]
    finally:
        rm.finish()


def test_async_job_past_async_timeout_fails_and_is_killed(sshd_servers, tmp_path):
    folder = node_folder(tmp_path, [sshd_servers[12]], script=False)
    write_script(folder, "slow.sh", 'echo "#Auptimizer:1"\nsleep 300\n')
    rm = make_manager(folder, async_run=True, async_reconnect=0.1, async_timeout=1)
    try:
        job, done = start_job(rm, folder, "./slow.sh", {})
        assert wait_for(lambda: rm._states.get(job.jid) and rm._states[job.jid].pgid, 10)
        pgid = rm._states[job.jid].pgid
        assert done.wait(20)
        record = rm.connector.get_job(job.jid)
        assert record["status"] == "FAILED" and record["score"] == 1
        assert "had not ended after async_timeout 1 s; it was stopped" in record["error"]
        assert not group_processes(pgid)
    finally:
        rm.finish()


def test_bad_environment_variable_name_fails_the_job_clearly(sshd_servers, tmp_path):
    folder = node_folder(tmp_path, [sshd_servers[12]], script=False)
    write_script(folder, "ok.sh", 'echo "#Auptimizer:1"\n')
    rm = make_manager(folder)
    try:
        job, done = start_job(rm, folder, "./ok.sh", {}, runtime_args={"env": {"BAD;NAME": "1"}})
        assert done.wait(20)
        assert "runtime_args.env has the variable name 'BAD;NAME'" in rm.connector.get_job(job.jid)["error"]
    finally:
        rm.finish()


def test_wrong_key_fails_at_once_without_retries(sshd_servers, tmp_path):
    from sshd import keygen

    server = sshd_servers[13]
    folder = node_folder(tmp_path, [server], script=False)
    other = keygen(tmp_path / "other_key")
    env_ini = folder / ".aup" / "env.ini"
    env_ini.write_text(env_ini.read_text().replace(str(server.factory.client_key), str(other)))
    write_script(folder, "ok.sh", 'echo "#Auptimizer:1"\n')
    rm = make_manager(folder, reconn_wait_time=5, max_retries=3)
    try:
        start = time.monotonic()
        job, done = start_job(rm, folder, "./ok.sh", {})
        assert done.wait(20) and time.monotonic() - start < 5
        assert "authentication failed for" in rm.connector.get_job(job.jid)["error"]
    finally:
        rm.finish()


def test_connections_are_reused_across_jobs(sshd_servers, tmp_path):
    folder = node_folder(tmp_path, [sshd_servers[7]], script=False)
    write_script(folder, "ok.sh", 'echo "#Auptimizer:1"\n')
    rm = make_manager(folder)
    try:
        for _ in range(5):
            job, done = start_job(rm, folder, "./ok.sh", {})
            assert done.wait(20)
            assert rm.connector.get_job(job.jid)["status"] == "FINISHED"
        assert rm.pool.connect_count(rm.names[next(iter(rm.names))]) == 1
    finally:
        rm.finish()


def test_unknown_host_key_is_refused_by_default(sshd_servers, tmp_path):
    folder = node_folder(tmp_path, [sshd_servers[8]], script=False)
    (folder / "known_hosts").write_text("")
    write_script(folder, "ok.sh", 'echo "#Auptimizer:1"\n')
    rm = make_manager(folder)
    try:
        job, done = start_job(rm, folder, "./ok.sh", {})
        assert done.wait(20)
        error = rm.connector.get_job(job.jid)["error"]
        assert "host key" in error and "unknown" in error and '"accept_new_hosts": true' in error
        assert "--accept-new-hosts" in error  # the option of `aup-tui resources --probe`
        with pytest.raises(NodeError, match="host key"):  # the only node is unusable: said, not waited for
            rm.get_available("me", "node")
    finally:
        rm.finish()


def test_experiment_with_only_unusable_nodes_fails_with_the_reason_instead_of_waiting(sshd_servers, tmp_path):
    folder = node_folder(tmp_path, [sshd_servers[8]])
    (folder / "known_hosts").write_text("")
    path = rosenbrock_experiment(folder, 3, job_failure={"ignore_fail": True, "job_retries": 2})
    exp = Experiment(load_experiment(path), auppath=str(folder / ".aup"))
    start = time.monotonic()
    with pytest.raises(
        NodeError, match=r"host key for 127.0.0.1:\d+ is unknown .*\"accept_new_hosts\": true"
    ):
        exp.run()
    assert time.monotonic() - start < 10
    assert exp.connector.get_experiment(exp.eid)["status"] == "FAILED"
    # and with new host keys allowed, the same experiment runs
    path = rosenbrock_experiment(folder, 3, resource_args={"accept_new_hosts": True}, filename="exp2.json")
    exp2, result = run_experiment(path, folder)
    assert result.status == "FINISHED"
    assert str(sshd_servers[8].port) in (folder / "known_hosts").read_text()


def test_a_node_the_monitor_reports_down_gets_no_jobs(sshd_factory, sshd_servers, tmp_path):
    dead = sshd_factory.new()
    folder = node_folder(tmp_path, [dead, sshd_servers[9]], script=False)
    dead.kill()
    pool = NodePool(known_hosts=str(folder / "known_hosts"), connect_timeout=3)
    monitor = NodeMonitor(pool, interval=60)
    rm = make_manager(folder, monitor=monitor)
    try:
        monitor.probe_once()
        alive = [rid for rid, spec in rm.specs.items() if spec.port == sshd_servers[9].port]
        assert rm.names[alive[0]] == f"node {alive[0]}"  # the names the TUI's monitor uses
        assert {rm.get_available("me", "node") for _ in range(20)} == set(alive)
    finally:
        rm.finish()
        pool.close()


def test_a_down_node_comes_back_without_a_monitor(sshd_server, tmp_path):
    folder = node_folder(tmp_path, [sshd_server], script=False)
    write_script(folder, "ok.sh", 'echo "#Auptimizer:1"\n')
    rm = make_manager(folder, max_retries=0)
    try:
        sshd_server.kill()
        job, done = start_job(rm, folder, "./ok.sh", {})
        assert done.wait(20)
        assert "connection refused" in rm.connector.get_job(job.jid)["error"]
        assert rm.get_available("me", "node") is None  # DOWN: no new jobs
        sshd_server.start()
        assert wait_for(lambda: rm.get_available("me", "node") is not None, 10)
        job, done = start_job(rm, folder, "./ok.sh", {})
        assert done.wait(20) and rm.connector.get_job(job.jid)["status"] == "FINISHED"
    finally:
        rm.finish()


def test_experiment_whose_nodes_never_answer_fails_after_the_retries(sshd_factory, tmp_path):
    dead = sshd_factory.new()
    folder = node_folder(tmp_path, [dead])
    dead.kill()
    path = rosenbrock_experiment(folder, 2, job_failure={"ignore_fail": True, "job_retries": 3})
    exp = Experiment(load_experiment(path), auppath=str(folder / ".aup"))
    start = time.monotonic()
    with pytest.raises(NodeError, match=r"no node can be reached \(cannot connect to .*connection refused\)"):
        exp.run()
    assert time.monotonic() - start < 15
    assert exp.connector.get_experiment(exp.eid)["status"] == "FAILED"


def test_no_nodes_is_a_clear_error_whose_example_init_runs(tmp_path):
    import re
    import shlex

    from helpers import cli

    init_aup(str(tmp_path / ".aup"), cpu=1)
    with pytest.raises(
        ConfigError,
        match=r"no nodes in node_mapping .*`aup-tui init --overwrite --node "
        r"USER@HOST\[:PORT\]`",
    ) as caught:
        get_resource_manager(
            "node", TinyDBConnector(str(tmp_path / ".aup")), 1, auppath=str(tmp_path / ".aup")
        )
    assert "user@host" not in str(caught.value)  # a placeholder `init` refuses, were it typed as shown
    example = re.search(r"e\.g\. `aup-tui ([^`]+)`", str(caught.value)).group(1)
    done = cli(*shlex.split(example), cwd=tmp_path)  # the example, typed as printed, is accepted
    assert done.returncode == 0, done.stderr
    rm = get_resource_manager(
        "node", TinyDBConnector(str(tmp_path / ".aup")), 1, auppath=str(tmp_path / ".aup")
    )
    try:
        assert [host for host in rm.load_node_mapping(auppath=str(tmp_path / ".aup")).values()] == [
            "me@192.0.2.10"
        ]
    finally:
        rm.finish()


def test_load_node_mapping_reads_every_host_form(tmp_path):
    init_aup(str(tmp_path / ".aup"), node=["alice@host1", "bob@host2:2222", "carol@host3:22 /keys/id"])
    mapping = SSHResourceManager.load_node_mapping("node_mapping", str(tmp_path / ".aup"))
    assert sorted(mapping.values()) == ["alice@host1", "bob@host2:2222", "carol@host3:22 /keys/id"]
    assert all(isinstance(rid, int) for rid in mapping)


# -- the commands themselves (run here with /bin/sh; no node needed) ----------------------------------


def test_kill_command_never_signals_init_or_everything():
    from aup_tui_backends.remote import kill_command

    for pgid in (0, 1, -1):
        with pytest.raises(ValueError):
            kill_command(pgid)


def test_job_commands_quote_every_path_and_value(tmp_path):
    import subprocess

    from aup_tui_backends.remote import RemoteJobPaths, job_body, parse_pgid, sync_command

    wd = tmp_path / "a 'b' \"c\"; $(touch x) `touch y`"
    (wd / "jobs").mkdir(parents=True)
    write_script(wd, "my job;.sh", 'echo "arg=$1 v=$V"\necho "#Auptimizer:1"\n')
    (wd / "jobs" / "7.json").write_text("{}")
    paths = RemoteJobPaths(workingdir=str(wd), script=str(wd / "my job;.sh"), jid=7, attempt=1)
    value = "'; touch z; echo '"
    out = subprocess.run(
        sync_command(paths, job_body(paths, {"V": value})),
        shell=True,
        capture_output=True,
        text=True,
        timeout=20,
    )
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and parse_pgid(lines[0])
    assert lines[1:] == [f"arg=jobs/7.json v={value}", "#Auptimizer:1"]
    assert sorted(p.name for p in wd.iterdir()) == ["jobs", "my job;.sh"]
    assert (wd / "jobs" / "7.1.remote.out").read_text() == "\n".join(lines[1:]) + "\n"
    assert (wd / "jobs" / "7.1.remote.rc").read_text().strip() == "0"


def test_an_experiment_shares_the_pool_it_is_given(sshd_servers, tmp_path):
    """A UI's NodePool handed over through manager_kwargs carries the jobs: one connection, reused."""
    folder = node_folder(tmp_path, [sshd_servers[10]])
    pool = NodePool(known_hosts=str(folder / "known_hosts"), connect_timeout=3)
    try:
        path = rosenbrock_experiment(folder, 4)
        exp = Experiment(load_experiment(path), auppath=str(folder / ".aup"), manager_kwargs={"pool": pool})
        result = exp.run()
        assert result.status == "FINISHED" and result.counts == {"FINISHED": 4}
        [name] = pool.nodes()
        assert pool.connect_count(name) == 1
    finally:
        pool.close()


# -- where a node experiment's files are (Auptimizer's layout) ----------------------------------


def test_node_experiment_script_is_local_to_the_launch_folder_and_workingdir_is_the_nodes(
    tmp_path, monkeypatch
):
    launch = tmp_path / "launch"
    (launch / "sub").mkdir(parents=True)
    write_script(launch / "sub", "job.sh", "echo\n")
    monkeypatch.chdir(launch)
    path = write_experiment(tmp_path, script="sub/job.sh", resource="node", workingdir="~/aup_demo")
    config = load_experiment(path)
    # the job's local files go beside the script; the node's folder is kept as written (~ = its home)
    assert (config.workingdir, config.script) == (str(launch / "sub"), "job.sh")
    assert config.remote_workingdir == "~/aup_demo"
    # absent: the same path on the node as the launch folder (Auptimizer's default)
    data = json.loads(path.read_text())
    del data["workingdir"]
    path.write_text(json.dumps(data))
    assert load_experiment(path).remote_workingdir == str(launch)


def test_resource_args_remote_workingdir_is_refused_with_where_the_path_goes(tmp_path):
    path = write_experiment(tmp_path, resource="node", resource_args={"remote_workingdir": "/srv/x"})
    with pytest.raises(
        ConfigError, match=r"resource_args\.remote_workingdir .* workingdir is the folder on the node"
    ):
        load_experiment(path)


# -- one naming of nodes -------------------------------------------------------------------------


async def test_two_nodes_on_one_host_have_their_own_names_in_records_status_table_and_panel(
    sshd_servers, tmp_path
):
    """Two sshd's on 127.0.0.1 (different ports) are two nodes: `host:port` in the job records
    (so in `status`), and told apart in the job table's narrow column and the nodes panel's rows
    (the Auptimizer-style `user@host:port /key` entry used to show as `root@127` for both)."""
    from aup_tui_backends.ssh import short_node_name
    from fake_nvml import FakeNVML
    from helpers import cli
    from textual.widgets import DataTable

    from aup_tui.app import AupApp
    from aup_tui.monitoring import Monitoring
    from aup_tui.widgets.job_table import JobTable
    from aup_tui.widgets.nodes_panel import NodesPanel

    servers = sshd_servers[:2]
    folder = node_folder(tmp_path, servers)
    exp, result = run_experiment(rosenbrock_experiment(folder, 4, n_parallel=2), folder)
    assert result.status == "FINISHED", exp.connector.errors(result.eid)
    names = {f"127.0.0.1:{s.port}" for s in servers}
    jobs = exp.connector.jobs(result.eid)
    assert {j["resource"] for j in jobs} == {f"node:{name}" for name in names}  # both ran jobs at once
    exp.connector.close()

    status = cli("status", "--json", cwd=folder)
    assert status.returncode == 0, status.stderr
    assert {j["resource"] for j in json.loads(status.stdout)["jobs"]} == {f"node:{name}" for name in names}

    auppath = str(folder / ".aup")
    conn = TinyDBConnector(auppath)
    app = AupApp(auppath, connector=conn, watch=result.eid)
    app.monitoring = Monitoring(auppath=auppath, nvml=FakeNVML([]), known_hosts=str(folder / "known_hosts"))
    try:
        async with app.run_test(size=(200, 50)) as pilot:
            jobs_table = app.screen.query_one(JobTable)
            nodes_table = app.screen.query_one(NodesPanel).query_one(DataTable)

            def shown() -> tuple[set[str], set[str]]:
                resources = {str(jobs_table.get_cell(str(j["jid"]), "resource")) for j in jobs}
                rows = {
                    str(getattr(row[0], "plain", row[0]))
                    for row in map(nodes_table.get_row, nodes_table.rows)
                }
                return resources, rows

            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    if len(shown()[1]) == 2 and len(shown()[0]) == 2:
                        break
                except Exception:  # rows not there yet
                    pass
                await pilot.pause(0.05)
            resources, rows = shown()
            assert resources == set(names), resources  # whole: the column widens to them
            assert rows == {short_node_name(name, 10) for name in names}, rows
            assert len(resources) == len(rows) == 2, (resources, rows)
            await pilot.press("q")
    finally:
        conn.close()
