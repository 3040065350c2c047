"""`resource: "ray"` end to end, as a user runs it: `aup-tui init --ray ADDRESS` and `aup-tui run`
against a real Ray cluster (a head and a worker node started by `ray start`) on loopback inside
a network namespace (tests/ray_cluster.py). One cluster serves the module; the lost-node test
adds a node of its own and kills its raylet, so it runs last.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import ROOT, pid_alive, write_experiment, write_script
from ray_cluster import NetNamespace, RayCluster, parent, start_cluster, stop_cluster

pytestmark = pytest.mark.slow

ROSENBROCK = ROOT / "examples" / "rosenbrock" / "rosenbrock.py"


@pytest.fixture(scope="module")
def cluster():
    cluster = start_cluster(workers=1, cpus=2, gpus=2)
    yield cluster
    stop_cluster(cluster)


def wait_for(predicate, timeout: float = 60, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def ray_folder(cluster: RayCluster, tmp_path: Path) -> Path:
    done = cluster.ns.cli("init", "--ray", cluster.address, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return tmp_path


def status(cluster: RayCluster, folder: Path) -> dict:
    done = cluster.ns.cli("status", "--json", cwd=folder)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def test_twenty_rosenbrock_jobs_run_on_the_cluster_with_live_results(cluster, tmp_path):
    folder = ray_folder(cluster, tmp_path)
    shutil.copy(ROSENBROCK, folder / "rosenbrock.py")
    exp = write_experiment(
        folder,
        script="./rosenbrock.py",
        resource="ray",
        n_samples=20,
        n_parallel=4,
        target="min",
        parameter_config=[
            {"name": "x", "range": [-2, 2], "type": "float"},
            {"name": "y", "range": [-1, 3], "type": "float"},
            {"name": "delay", "range": [0.02], "type": "choice"},
        ],
    )
    done = cluster.ns.cli("run", "--headless", str(exp), cwd=folder, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    report = status(cluster, folder)
    assert report["status"] == "FINISHED"
    assert [j["status"] for j in report["jobs"]] == ["FINISHED"] * 20
    assert {j["resource"].split(":")[0] for j in report["jobs"]} == {"ray"}
    # each job's log is here, with every intermediate result the script printed on the node
    for job in report["jobs"]:
        log = (folder / "jobs" / f"{job['jid']}.1.out").read_text()
        assert log.startswith(f"[aup] job {job['jid']} runs on Ray node 127.0.0.1")
        assert log.count("#Auptimizer:") == 5
        assert f"#Auptimizer:{job['score']:.6f}" in log


def test_output_streams_back_live_and_a_stop_kills_the_jobs_processes(cluster, tmp_path):
    folder = ray_folder(cluster, tmp_path)
    write_script(
        folder,
        "job.sh",
        f"""
        sleep 300 &
        echo $! > {folder}/grandchild.pid
        echo $$ > {folder}/script.pid
        echo "#Auptimizer:0.5"
        while [ ! -e {folder}/never ]; do sleep 0.1; done
        """,
    )
    exp = write_experiment(folder, resource="ray", n_samples=1, n_parallel=1)
    run = cluster.ns.cli_popen("run", "--headless", str(exp), cwd=folder)
    try:
        log = wait_for(lambda: list((folder / "jobs").glob("*.1.out")), what="the job's log")[0]
        # the result line is here while the job still runs on its node: streamed, not copied at the end
        wait_for(lambda: "#Auptimizer:0.5" in log.read_text(), what="the job's first result, live")
        pids = [int((folder / name).read_text()) for name in ("script.pid", "grandchild.pid")]
        assert all(pid_alive(p) for p in pids)
        jid = log.name.split(".")[0]
        stop = cluster.ns.cli("stop", "--job", jid, cwd=folder)
        assert stop.returncode == 0, stop.stderr
        run.wait(90)
    finally:
        if run.poll() is None:
            run.kill()
    report = status(cluster, folder)
    assert [j["status"] for j in report["jobs"]] == ["STOPPED"]
    assert report["jobs"][0]["score"] == 0.5  # its last result is kept
    # the script and the child it left in the background are gone from the node
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=10, what="the job's processes to end")


def test_a_job_no_node_can_take_is_said_and_stops_while_it_waits_in_ray(cluster, tmp_path):
    folder = ray_folder(cluster, tmp_path)
    write_script(folder, "job.sh", 'echo "#Auptimizer:1"')
    exp = write_experiment(folder, resource="ray", n_samples=1, resource_args={"num_cpus": 3})
    run = cluster.ns.cli_popen("run", "--headless", str(exp), cwd=folder, stderr=subprocess.PIPE)
    try:

        def running() -> list:
            done = cluster.ns.cli("status", "--json", cwd=folder)
            return json.loads(done.stdout)["jobs"] if done.stdout.strip() else []

        jid = wait_for(running, timeout=60, what="the job to start")[0]["jid"]
        assert cluster.ns.cli("stop", "--job", str(jid), cwd=folder).returncode == 0
        _, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert "no node of the Ray cluster has CPU 3 for a job" in err
    assert [j["status"] for j in status(cluster, folder)["jobs"]] == ["STOPPED"]


def test_a_failing_job_fails_the_experiment_with_its_exit_status(cluster, tmp_path):
    folder = ray_folder(cluster, tmp_path)
    write_script(folder, "job.sh", 'echo "no luck"; exit 3')
    exp = write_experiment(folder, resource="ray", n_samples=1, n_parallel=1)
    done = cluster.ns.cli("run", "--headless", str(exp), cwd=folder, timeout=120)
    assert done.returncode == 1
    assert (
        "job.sh exited with status 3 on Ray node 127.0.0.1 (last output: 'no luck')"
        in done.stdout + done.stderr
    )
    assert [j["status"] for j in status(cluster, folder)["jobs"]] == ["FAILED"]
    # a prescript that fails: the script does not run, and the message says so
    exp = write_experiment(
        folder, "pre.json", resource="ray", n_samples=1, runtime_args={"prescript": "exit 4"}
    )
    done = cluster.ns.cli("run", "--headless", str(exp), cwd=folder, timeout=120)
    assert done.returncode == 1
    assert (
        "prescript exited with status 4 on Ray node 127.0.0.1; job.sh did not run"
        in done.stdout + done.stderr
    )


def test_num_gpus_gives_the_job_its_cards_and_other_jobs_none(cluster, tmp_path):
    """Ray hands out the worker's two GPUs by id (no card needed) and sets CUDA_VISIBLE_DEVICES in
    the job's environment; a job that asks for none sees none, as on the CPU manager."""
    folder = ray_folder(cluster, tmp_path)
    write_script(folder, "job.sh", 'echo "cards=[$CUDA_VISIBLE_DEVICES]"; echo "#Auptimizer:1"')
    for n, want in ((1, ("cards=[0]", "cards=[1]")), (0, ("cards=[]",))):
        exp = write_experiment(
            folder, f"gpu{n}.json", resource="ray", n_samples=2, resource_args={"num_gpus": n}
        )
        done = cluster.ns.cli("run", "--headless", str(exp), cwd=folder, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        report = status(cluster, folder)
        for job in report["jobs"]:
            log = (folder / "jobs" / f"{job['jid']}.1.out").read_text()
            assert any(w in log for w in want), log
            assert ("GPUs: none" in log) == (n == 0), log


def test_runtime_env_runtime_args_and_workingdir_reach_the_job(cluster, tmp_path):
    """Ray's runtime_env (env_vars), the experiment's runtime_args (env, prescript) and its
    working folder (it exists on the node: the same machine) are the job's."""
    folder = ray_folder(cluster, tmp_path)
    (folder / "data.txt").write_text("42\n")
    write_script(
        folder,
        "job.sh",
        'echo "ray=$FROM_RAY args=$FROM_ARGS pre=$(cat pre.txt) data=$(cat data.txt)"; echo "#Auptimizer:1"',
    )
    exp = write_experiment(
        folder,
        resource="ray",
        n_samples=1,
        resource_args={"runtime_env": {"env_vars": {"FROM_RAY": "yes"}}},
        runtime_args={"env": {"FROM_ARGS": 7}, "prescript": "echo pre > pre.txt"},
    )
    done = cluster.ns.cli("run", "--headless", str(exp), cwd=folder, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    jid = status(cluster, folder)["jobs"][0]["jid"]
    assert "ray=yes args=7 pre=pre data=42" in (folder / "jobs" / f"{jid}.1.out").read_text()


def monitor_rows(cluster: RayCluster) -> dict:
    """What the nodes panel is given: RayClusterMonitor's rows, sampled in a driver in the namespace."""
    code = f"""
import json, ray
from aup_tui_backends.monitors.ray_cluster import RayClusterMonitor
ray.init(address={cluster.address!r}, log_to_driver=False, logging_level="ERROR")
rows = RayClusterMonitor().sample()
print(json.dumps({{k: [str(s.state), s.host, s.usage, s.error] for k, s in rows.items()}}))
ray.shutdown()
"""
    import sys

    done = cluster.ns.run([sys.executable, "-c", code])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_probe_and_the_nodes_panels_monitor_show_the_clusters_nodes(cluster, tmp_path):
    folder = ray_folder(cluster, tmp_path)
    done = cluster.ns.cli("resources", "--probe", cwd=folder, timeout=120)
    assert done.returncode == 0, done.stderr
    # (in use: 0 once Ray has taken back the last tests' idle workers; it may not have yet)
    assert re.search(r"Ray: 2 nodes alive, 0 dead; CPUs [0-2]/2 in use; GPUs [0-2]/2 in use", done.stdout)
    assert "127.0.0.1 (head)  UP  CPU 0/0 GPU 0/0" in done.stdout
    rows = {r[1]: r for r in monitor_rows(cluster).values()}
    assert sorted(rows) == ["127.0.0.1", "127.0.0.1 (head)"]
    assert rows["127.0.0.1 (head)"][::2] == ["UP", "CPU 0/0 GPU 0/0"]
    assert rows["127.0.0.1"][0] == "UP" and re.fullmatch(r"CPU [0-2]/2 GPU [0-2]/2", rows["127.0.0.1"][2])


def screen_text(data: bytes) -> str:
    """What a terminal was sent, without its escape sequences (enough to find words on screen)."""
    return re.sub(r"\x1b\[[0-9;?<>=]*[A-Za-z$~]", "", data.decode("utf-8", "replace"))


def on_a_terminal(cluster: RayCluster, folder: Path, *args: str, until: str, timeout: float = 90) -> str:
    """`aup-tui ARGS` on a 200×50 pty in the namespace until `until` is on screen (or `timeout`);
    what was on screen, as text."""
    import select
    import sys

    from helpers import set_window_size

    master, slave = os.openpty()
    set_window_size(slave, 50, 200)
    proc = cluster.ns.popen(
        [sys.executable, "-m", "aup_tui.cli", *args],
        cwd=folder,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    data = b""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not re.search(until, screen_text(data)):
            if select.select([master], [], [], 0.2)[0]:
                data += os.read(master, 65536)
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    return screen_text(data)


def test_the_tui_runs_a_ray_experiment_and_shows_the_clusters_nodes(cluster, tmp_path):
    """`aup-tui run` on a terminal: Ray starts its driver under the TUI's captured output, the
    jobs run, and the nodes panel shows the cluster's nodes, sampled off the UI thread; a
    dashboard watching the finished run (another process) connects to the cluster itself."""
    folder = ray_folder(cluster, tmp_path)
    write_script(folder, "job.sh", 'sleep 1; echo "#Auptimizer:1"')
    exp = write_experiment(folder, resource="ray", n_samples=4, n_parallel=2)
    text = on_a_terminal(cluster, folder, "run", str(exp), until="FINISHED")
    assert "FINISHED" in text, text[-2000:]
    assert "cannot start" not in text
    # both nodes (the head and the worker) in the nodes panel, UP, with what is in use there
    rows = re.findall(r"ray [0-9a-f]{6}\s+UP", text)
    assert len({row.split()[1] for row in rows}) == 2, text[-3000:]
    assert "In use" in text and re.search(r"CPU [0-2]/2 GPU 0/2", text), text[-3000:]
    assert [j["status"] for j in status(cluster, folder)["jobs"]] == ["FINISHED"] * 4

    watched = on_a_terminal(cluster, folder, "watch", until=r"CPU [0-2]/2 GPU 0/2", timeout=60)
    assert len(set(re.findall(r"ray [0-9a-f]{6}\s+UP", watched))) >= 2, watched[-3000:]
    assert re.search(r"CPU [0-2]/2 GPU 0/2", watched)


def test_a_job_whose_node_is_lost_runs_again_elsewhere(cluster, tmp_path):
    """Runs last: it leaves a dead node in the cluster."""
    victim = cluster.add_worker(num_cpus=2)
    folder = ray_folder(cluster, tmp_path)
    write_script(
        folder,
        "job.sh",
        f"""
        echo $$ > {folder}/$AUP_JOB_ID.$$.pid
        sleep 4
        echo "#Auptimizer:1"
        """,
    )
    exp = write_experiment(
        folder, resource="ray", n_samples=4, n_parallel=4, resource_args={"max_retries": 2}
    )
    run = cluster.ns.cli_popen("run", "--headless", str(exp), cwd=folder)

    def on_victim() -> bool:
        for pid_file in folder.glob("*.pid"):
            pid = int(pid_file.name.split(".")[1])
            if parent(parent(pid)) == victim:  # script → Ray worker → the node's raylet
                return True
        return False

    try:
        wait_for(on_victim, timeout=60, what="a job on the node to lose")
        os.kill(victim, signal.SIGKILL)
        assert run.wait(120) == 0
    finally:
        if run.poll() is None:
            run.kill()
    report = status(cluster, folder)
    assert [j["status"] for j in report["jobs"]] == ["FINISHED"] * 4  # none lost
    logs = [p.read_text() for p in (folder / "jobs").glob("*.1.out")]
    retried = [log for log in logs if "[aup] lost Ray node 127.0.0.1" in log]
    assert retried and all("running it again (1 of 2)" in log for log in retried)
    assert all(log.rstrip().endswith("#Auptimizer:1") for log in logs)

    # the lost node shows as dead (once Ray's health checks have given up on it), with Ray's reason
    def with_a_dead_node() -> dict | None:
        rows = monitor_rows(cluster)
        return rows if any(v[0] == "DOWN" for v in rows.values()) else None

    rows = wait_for(with_a_dead_node, timeout=60, what="Ray to report the node dead")
    assert sorted(r[0] for r in rows.values()) == ["DOWN", "UP", "UP"]
    probe = cluster.ns.cli("resources", "--probe", cwd=folder, timeout=120).stdout
    assert "Ray: 2 nodes alive, 1 dead" in probe and "  DEAD  " in probe


def test_without_an_address_a_local_ray_runs_the_jobs_and_ends_with_the_run(tmp_path):
    """`aup-tui init --ray`: a Ray started for the run and shut down at its end (in a namespace of
    its own, so that what is left of it afterwards can be counted)."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("needs unshare and nsenter for a loopback-only namespace")
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="aupray", dir="/tmp")  # the local Ray's session files; short
    try:
        ns = NetNamespace(RAY_TMPDIR=ray_tmp)
    except OSError as exc:
        shutil.rmtree(ray_tmp, ignore_errors=True)
        pytest.skip(str(exc))
    try:
        assert ns.cli("init", "--ray", cwd=tmp_path).returncode == 0
        write_script(tmp_path, "job.sh", 'echo "#Auptimizer:$AUP_JOB_ID"')
        exp = write_experiment(tmp_path, resource="ray", n_samples=3)
        done = ns.cli("run", "--headless", str(exp), cwd=tmp_path, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "3 finished" in done.stdout + done.stderr
        # ray.shutdown() ended the local Ray: nothing but the namespace's holder is left in it
        wait_for(lambda: ns.pids() == [ns.holder.pid], timeout=20, what="the local Ray to end")
        assert os.listdir(ray_tmp)  # it ran there, not in /tmp/ray
    finally:
        ns.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)
