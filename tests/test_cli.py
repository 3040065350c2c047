"""The command line end to end, as a user runs it: real processes on a real `.aup`."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from helpers import cli, cli_popen, pid_alive, write_experiment, write_script
from sshd import free_port, sshd_factory, sshd_server  # noqa: F401  (fixtures)


def status(folder: Path, *args: str) -> dict:
    out = cli("status", "--json", *args, cwd=folder)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_init_run_status_as_in_the_readme(tmp_path):
    example = Path(__file__).parent.parent / "examples" / "rosenbrock"
    init = cli("init", "--cpu", "2", cwd=tmp_path)
    assert init.returncode == 0 and "2 cpu" in init.stdout
    exp = json.loads((example / "experiment.json").read_text())
    exp.update(workingdir=str(example), n_samples=4)
    (tmp_path / "exp.json").write_text(
        json.dumps(
            {
                **exp,
                "parameter_config": exp["parameter_config"]
                + [{"name": "delay", "range": [0.01], "type": "choice"}],
            }
        )
    )
    run = cli("run", "--headless", "exp.json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "4/4" in run.stderr and "best job" in run.stderr and "logs:" in run.stderr
    st = status(tmp_path)
    assert st["status"] == "FINISHED" and st["n_samples"] == 4 and len(st["jobs"]) == 4
    finished = [j for j in st["jobs"] if j["status"] == "FINISHED"]
    best = min(finished, key=lambda j: j["score"])
    assert st["best"] == {"jid": best["jid"], "score": best["score"]}
    assert set(st["jobs"][0]) == {"jid", "status", "score", "config", "resource"}


def test_resources_lists_and_init_rejects_bad_host(tmp_path):
    cli("init", "--cpu", "2", "--gpu", "0,0,1", "--passive", cwd=tmp_path)
    out = cli("resources", cwd=tmp_path).stdout
    assert out.count(" cpu ") == 2 and out.count(" gpu ") == 3 and " passive " in out
    ini = (tmp_path / ".aup" / "env.ini").read_text()
    assert "[Auptimizer]" in ini and '"0"' in ini and "gpu_mapping" in ini
    bad = cli("init", "--node", "user@:22", cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "user@:22" in bad.stderr


def test_existing_auptimizer_env_ini_is_read_as_is(tmp_path):
    aup = tmp_path / ".aup"
    aup.mkdir()
    (aup / "env.ini").write_text(
        "[Auptimizer]\nAuptimizer_PATH = /somewhere/.aup\nSQL_ENGINE = sqlite\nTMP_FOLDER = /tmp/aup\n"
        'gpu_mapping = {"3": "0", "4": "1"}\n'
    )
    out = cli("resources", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "   3  gpu" in out.stdout and "   4  gpu" in out.stdout


def test_bad_experiment_files_get_one_clear_line(workdir):
    (workdir / "broken.json").write_text('{\n  "name": "x",\n  "script" "./job.sh"\n}\n')
    out = cli("run", "--headless", "broken.json", cwd=workdir)
    assert out.returncode == 1 and "line 3" in out.stderr and "Traceback" not in out.stderr
    write_experiment(workdir, "missing.json")
    data = json.loads((workdir / "missing.json").read_text())
    del data["name"], data["target"]
    (workdir / "missing.json").write_text(json.dumps(data))
    out = cli("run", "--headless", "missing.json", cwd=workdir)
    assert out.returncode == 1 and "name" in out.stderr and "target" in out.stderr
    write_experiment(workdir, "res.json", resource="quantum")
    out = cli("run", "--headless", "res.json", cwd=workdir)
    assert out.returncode == 1 and "quantum" in out.stderr and "cpu" in out.stderr


def test_not_executable_script_says_chmod_and_exits_1(workdir):
    write_script(workdir, "job.sh", "echo '#Auptimizer:1'").chmod(0o644)
    write_experiment(workdir, n_samples=1)
    out = cli("run", "--headless", "experiment.json", cwd=workdir)
    assert out.returncode == 1
    assert "chmod +x" in out.stderr
    # the summary says why it failed, and so does `status` later
    why = next(line for line in out.stderr.splitlines() if line.startswith("why: "))
    assert "is not executable" in why and "chmod +x" in why
    assert status(workdir)["status"] == "FAILED"
    assert "chmod +x" in status(workdir)["reason"]
    assert why in cli("status", cwd=workdir).stdout


def test_no_aup_folder_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    out = cli("status", cwd=tmp_path)
    assert out.returncode == 1 and "aup-tui init" in out.stderr


def _slow_experiment(folder: Path, n: int = 4) -> None:
    write_script(
        folder,
        "slow.sh",
        """
        echo "pid $$"
        echo "#Auptimizer:0.5"
        sleep 30
        echo "#Auptimizer:1"
    """,
    )
    write_experiment(
        folder, script="./slow.sh", n_samples=n, job_failure={"ignore_fail": True, "job_retries": 0}
    )


def _jobs_in(folder: Path, state: str) -> list[dict]:
    """Jobs of the latest experiment in `state` ([] while there is no experiment yet)."""
    try:
        return [j for j in status(folder)["jobs"] if j["status"] == state]
    except AssertionError:
        return []


def _running_jobs(folder: Path) -> list[dict]:
    return _jobs_in(folder, "RUNNING")


def _job_pid(folder: Path, jid: int) -> int:
    log = folder / "jobs" / f"{jid}.1.out"
    text = wait_for(lambda: log.exists() and "pid" in log.read_text() and log.read_text(), what="job pid")
    return int(text.split("pid ")[1].split()[0])


def _start_slow_run(folder: Path) -> tuple:
    """A headless run of slow jobs, once two of them run: (the process, the two jobs, their pids)."""
    _slow_experiment(folder)
    proc = cli_popen("run", "--headless", "experiment.json", cwd=folder, stderr=-1, stdout=-1)
    running = wait_for(lambda: len(_running_jobs(folder)) == 2 and _running_jobs(folder), what="2 jobs")
    return proc, running, [_job_pid(folder, j["jid"]) for j in running]


def _kill_9_run(folder: Path) -> None:
    """kill -9 a headless run mid-way; its orphaned jobs are the user's to kill, we kill them here."""
    proc, _, pids = _start_slow_run(folder)
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_stop_job_and_experiment_from_another_process(workdir):
    proc, running, pids = _start_slow_run(workdir)
    try:
        first, pid = running[0]["jid"], pids[0]
        t0 = time.monotonic()
        assert cli("stop", "--job", str(first), cwd=workdir).returncode == 0
        wait_for(lambda: not pid_alive(pid), timeout=5, what="job process gone")
        assert time.monotonic() - t0 < 2.0  # request → watcher (≤0.25 s) → kill (≤0.5 s grace)
        wait_for(
            lambda: any(j["jid"] == first and j["status"] == "STOPPED" for j in status(workdir)["jobs"]),
            what="job recorded STOPPED",
        )
        eid = status(workdir)["eid"]
        assert cli("stop", "--experiment", str(eid), cwd=workdir).returncode == 0
        assert proc.wait(10) == 130
    finally:
        proc.kill()
    st = status(workdir)
    assert st["status"] == "STOPPED"
    assert not [j for j in st["jobs"] if j["status"] == "RUNNING"]


def test_ctrl_c_stops_cleanly_and_prints_best_so_far(workdir):
    proc, _, pids = _start_slow_run(workdir)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 130
    assert "STOPPED" in err and "no job finished" in err
    assert all(not pid_alive(p) for p in pids)
    st = status(workdir)
    assert st["status"] == "STOPPED"
    assert {j["status"] for j in st["jobs"]} == {"STOPPED"}
    assert all(j["score"] == 0.5 for j in st["jobs"])  # results so far are kept


def test_kill_9_of_a_headless_run_is_recovered(workdir):
    _kill_9_run(workdir)
    out = cli("resources", "--free", cwd=workdir)
    assert "freed 2 resource(s)" in out.stdout
    listing = out.stdout.splitlines()[1:]
    assert len(listing) == 2 and all(line.endswith(" free") for line in listing)
    st = status(workdir)
    assert st["status"] == "INTERRUPTED"
    assert {j["status"] for j in st["jobs"]} == {"INTERRUPTED"}
    # the freed resources run the next experiment
    write_experiment(workdir, n_samples=2)
    assert cli("run", "--headless", "experiment.json", cwd=workdir).returncode == 0


def test_passive_job_answered_at_the_terminal_prompt(tmp_path):
    cli("init", "--passive", cwd=tmp_path)
    write_script(tmp_path, "job.sh", "echo '#Auptimizer:1'")
    write_experiment(tmp_path, resource="passive", n_samples=2)
    answers = "this is not a result\n\n#Auptimizer:0.25\n#Auptimizer:0.5\n\n0.75\n"
    out = cli("run", "--headless", "experiment.json", cwd=tmp_path, input=answers)
    assert out.returncode == 0, out.stderr
    assert "no result found" in out.stderr  # re-asked after garbage
    assert "./job.sh jobs/" in out.stderr
    scores = sorted(j["score"] for j in status(tmp_path)["jobs"])
    assert scores == [0.5, 0.75]


def test_gpu_experiment_through_the_cli_gives_each_job_its_card(tmp_path):
    assert cli("init", "--gpu", "0,0,2", cwd=tmp_path).returncode == 0
    write_script(
        tmp_path,
        "job.sh",
        """
        echo "card=$CUDA_VISIBLE_DEVICES"
        sleep 0.1
        echo "#Auptimizer:1"
    """,
    )
    write_experiment(tmp_path, resource="gpu", n_parallel=3, n_samples=6)
    out = cli("run", "--headless", "experiment.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    cards = {"gpu:0": "0", "gpu:2": "2"}
    for job in status(tmp_path)["jobs"]:
        log = (tmp_path / "jobs" / f"{job['jid']}.1.out").read_text()
        assert f"card={cards[job['resource']]}\n" in log


def test_n_parallel_above_free_resources_is_said(workdir):
    write_experiment(workdir, n_parallel=8, n_samples=3)
    out = cli("run", "--headless", "experiment.json", cwd=workdir)
    assert out.returncode == 0
    assert "n_parallel is 8 but only 2 'cpu' resources are free: running 2 at a time" in out.stderr


def test_passive_job_answered_by_another_process_through_the_store(tmp_path):
    from aup_tui_backends.store import TinyDBConnector

    cli("init", "--passive", cwd=tmp_path)
    write_script(tmp_path, "job.sh", "echo '#Auptimizer:1'")
    write_experiment(tmp_path, resource="passive", n_samples=2, job_failure={"ignore_fail": True})
    proc = cli_popen("run", "--headless", "experiment.json", cwd=tmp_path, stdin=-1, stdout=-1, stderr=-1)
    other = TinyDBConnector(str(tmp_path / ".aup"))
    try:
        first = wait_for(lambda: _jobs_in(tmp_path, "WAITING"), what="a waiting job")[0]["jid"]
        other.submit_passive(status(tmp_path)["eid"], first, "#Auptimizer:0.3\n#Auptimizer:0.6\n")
        second = wait_for(
            lambda: [j for j in _jobs_in(tmp_path, "WAITING") if j["jid"] != first],
            what="the next waiting job",
        )[0]["jid"]
        other.submit_passive(status(tmp_path)["eid"], second, "ran out of memory", failed=True)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    jobs = {j["jid"]: j for j in status(tmp_path)["jobs"]}
    assert jobs[first]["status"] == "FINISHED" and jobs[first]["score"] == 0.6
    assert jobs[second]["status"] == "FAILED"
    assert TinyDBConnector(str(tmp_path / ".aup")).get_job(second)["error"] == "ran out of memory"


def test_resources_probe_reports_up_and_down_nodes_and_local_gpus(tmp_path, sshd_server, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    sshd_server.factory.write_known_hosts(home / ".ssh" / "known_hosts", [sshd_server])
    monkeypatch.setenv("HOME", str(home))
    dead = f"root@127.0.0.1:{free_port()}"
    assert cli("init", "--node", f"{sshd_server.mapping_value()},{dead}", cwd=tmp_path).returncode == 0
    out = cli("resources", "--probe", "--timeout", "3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    up = next(line for line in lines if f":{sshd_server.port}" in line and line.startswith("node"))
    down = next(line for line in lines if dead in line and line.startswith("node"))
    assert " UP " in up and "rtt" in up and "load" in up
    assert " DOWN " in down and "refused" in down
    assert any(line.startswith("local GPUs:") for line in lines)


def test_the_dashboard_reclaims_what_a_dead_run_left_behind(workdir, monkeypatch):
    """Plain `aup-tui` after a kill -9: the experiment is INTERRUPTED, not shown as running forever."""
    _kill_9_run(workdir)
    from aup_tui_backends.store import TinyDBConnector

    import aup_tui.app
    from aup_tui.cli import main

    seen = {}

    def what_the_app_is_given(auppath, connector=None, **kw):
        seen["status"] = connector.latest_experiment()["status"]
        seen["free"] = [r["status"] for r in connector.resources()]
        return 0

    monkeypatch.setattr(aup_tui.app, "run_app", what_the_app_is_given)
    monkeypatch.setattr("aup_tui.cli._has_terminal", lambda: True)  # pytest's stdin is none
    assert main(["--aup", str(workdir / ".aup")]) == 0
    assert seen == {"status": "INTERRUPTED", "free": ["free", "free"]}
    assert TinyDBConnector(str(workdir / ".aup")).jobs(1)[0]["status"] == "INTERRUPTED"
