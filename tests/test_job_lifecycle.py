"""How a local job ends and how its output becomes its result: real job processes, a real store.

A job ends when its script exits (whatever it left behind is killed then); a failing prescript
is reported as the prescript's; a result that is not a finite number fails the job; a job that
cannot start says why in one line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from aup_tui_backends import Experiment
from aup_tui_backends.config import load_experiment
from aup_tui_backends.jobs import Job
from aup_tui_backends.resources import get_resource_manager
from aup_tui_backends.store import TinyDBConnector
from helpers import cli, cli_popen, pid_alive, write_experiment, write_script


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def wait_for(predicate, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def run_one(
    folder: Path, script: str, runtime_args: dict | None = None, path: Path | None = None, timeout: float = 20
) -> dict:
    """Run one job through the CPU manager's API; its store record once it ended."""
    connector = TinyDBConnector(str(folder / ".aup"))
    rm = get_resource_manager("cpu", connector, 1, auppath=str(folder / ".aup"), eid=1)
    job = Job(script, {"x": 1}, path=str(path or folder), retries=0)
    job.jid = connector.new_jid()
    done = threading.Event()
    rid = rm.get_available("me", "cpu")
    rm.run_job(job, rid, type("Cfg", (), {"runtime_args": runtime_args or {}})(), lambda s, j: done.set())
    try:
        assert done.wait(timeout), f"job {job.jid} did not end within {timeout} s"
        return connector.get_job(job.jid)
    finally:
        rm.finish()
        connector.close()


# -- a job ends when its script exits ------------------------------------------------------------


def test_a_background_child_holding_stdout_does_not_keep_the_job_running(workdir):
    # the child keeps the job's stdout open for 600 s after the script has exited
    write_script(
        workdir,
        "bg.sh",
        """
        (sleep 600 & echo $! > "$1.child")
        echo "#Auptimizer:0.5"
    """,
    )
    exp = Experiment(
        load_experiment(write_experiment(workdir, script="./bg.sh", n_samples=1, n_parallel=1)),
        auppath=str(workdir / ".aup"),
    )
    runner = threading.Thread(target=exp.run, daemon=True)
    runner.start()
    child = None
    try:
        runner.join(20)
        [jid] = list(exp.resource_manager.jobs)
        child = int((workdir / "jobs" / f"{jid}.json.child").read_text())
        assert not runner.is_alive(), "the job was still RUNNING 20 s after its script exited"
        job = exp.connector.get_job(jid, exp.eid)
        assert job["status"] == "FINISHED" and job["score"] == 0.5
        assert exp.result().status == "FINISHED"
        assert wait_for(lambda: not pid_alive(child), 5), "what the job left behind was not killed"
    finally:
        if child is not None:
            _kill_quietly(child)


def test_output_written_just_before_the_script_exits_is_kept(workdir):
    # many lines and no newline at the end, while a child still holds the pipe
    write_script(
        workdir,
        "burst.sh",
        """
        (sleep 600 & echo $! > "$1.child")
        i=0
        while [ $i -lt 2000 ]; do echo "line $i"; i=$((i+1)); done
        echo "#Auptimizer:0.25"
        printf 'no newline at the end'
    """,
    )
    try:
        record = run_one(workdir, "./burst.sh")
        assert record["status"] == "FINISHED" and record["score"] == 0.25
        log = (workdir / "jobs" / f"{record['jid']}.1.out").read_text()
        assert log.count("\nline ") == 1999 and log.endswith("#Auptimizer:0.25\nno newline at the end")
    finally:
        for f in (workdir / "jobs").glob("*.child"):
            _kill_quietly(int(f.read_text()))


def test_stop_of_a_job_with_a_background_child_ends_it_and_the_child(workdir):
    """`aup-tui stop --job` (through the store) ends a job whose child holds its stdout."""
    write_script(
        workdir,
        "bgwait.sh",
        """
        (sleep 600 & echo $! > "$1.child")
        echo "#Auptimizer:0.5"
        sleep 600
    """,
    )
    path = write_experiment(workdir, script="./bgwait.sh", n_samples=1, n_parallel=1)
    with open(workdir / "run.out", "w") as out, open(workdir / "run.err", "w") as err:
        proc = cli_popen("run", "--headless", str(path), cwd=workdir, stdout=out, stderr=err)
    child = None
    try:
        assert wait_for(
            lambda: list((workdir / "jobs").glob("*.child")) if (workdir / "jobs").exists() else [], 20
        )
        childfile = next((workdir / "jobs").glob("*.child"))
        assert wait_for(lambda: childfile.read_text().strip(), 5)
        child = int(childfile.read_text())
        jid = int(childfile.name.split(".")[0])
        assert wait_for(lambda: "#Auptimizer:0.5" in (workdir / "jobs" / f"{jid}.1.out").read_text(), 10)
        stop = cli("stop", "--job", str(jid), cwd=workdir)
        assert stop.returncode == 0, stop.stderr
        proc.wait(20)  # its only job stopped: the experiment is over
        assert wait_for(lambda: not pid_alive(child), 5)
        status = json.loads(cli("status", "--json", cwd=workdir).stdout)
        [job] = status["jobs"]
        assert job["status"] == "STOPPED" and job["score"] == 0.5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if child is not None:
            _kill_quietly(child)


# -- the prescript --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prescript, status", [("exit 3", 3), ("false", 1), ("echo set up; exec >/dev/null; exit 4", 4)]
)
def test_a_failing_prescript_is_reported_as_such_and_the_script_does_not_run(workdir, prescript, status):
    write_script(workdir, "mark.sh", 'touch "$1.ran"\necho "#Auptimizer:1"\n')
    record = run_one(workdir, "./mark.sh", {"prescript": prescript, "postscript": "echo post"})
    assert record["status"] == "FAILED"
    assert record["error"].startswith(f"prescript exited with status {status}; mark.sh did not run"), record[
        "error"
    ]
    assert not (workdir / "jobs" / f"{record['jid']}.json.ran").exists()


def test_a_prescript_that_works_sets_up_the_script(workdir):
    write_script(workdir, "env.sh", 'echo "pre=$PRE"\necho "#Auptimizer:2"\n')
    record = run_one(workdir, "./env.sh", {"prescript": "export PRE=yes", "postscript": "touch post.done"})
    assert record["status"] == "FINISHED" and record["score"] == 2
    assert "pre=yes" in (workdir / "jobs" / f"{record['jid']}.1.out").read_text()
    assert (workdir / "post.done").exists()


# -- results that are not finite numbers ----------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e309", "0.5,inf"])
def test_a_non_finite_result_fails_the_job_with_the_reason(workdir, value):
    write_script(workdir, "odd.sh", f'echo "#Auptimizer:0.1"\necho "#Auptimizer:{value}"\n')
    record = run_one(workdir, "./odd.sh")
    assert record["status"] == "FAILED"
    shown = value.split(",")[-1]
    what = "score" if "," not in value else "value 2"
    assert record["error"].startswith(
        f"job {record['jid']} reported a non-finite {what} '{shown}' in '#Auptimizer:{value}'"
    ), record["error"]
    assert record["score"] == 0.1  # the last finite result is kept


def _strict_json(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_status_json_is_strict_json_even_for_old_non_finite_records(workdir):
    write_script(workdir, "inf.sh", 'echo "#Auptimizer:inf"\n')
    path = write_experiment(
        workdir, script="./inf.sh", n_samples=2, job_failure={"ignore_fail": True, "job_retries": 0}
    )
    run = cli("run", "--headless", str(path), cwd=workdir)
    assert run.returncode == 1
    status = _strict_json(cli("status", "--json", cwd=workdir).stdout)
    assert all(j["status"] == "FAILED" and j["score"] is None for j in status["jobs"])
    # a store written before this fix holds Infinity/NaN: --json still prints strict JSON
    connector = TinyDBConnector(str(workdir / ".aup"))
    eid = status["eid"]
    jids = [j["jid"] for j in status["jobs"]]
    connector.end_job(eid, jids[0], float("inf"), "FINISHED", values=[float("inf"), float("nan")])
    connector.end_job(eid, jids[1], float("nan"), "FINISHED", values=[float("nan")])
    connector.close()
    out = cli("status", "--json", cwd=workdir)
    assert out.returncode == 0, out.stderr
    status = _strict_json(out.stdout)
    assert {j["jid"]: j["score"] for j in status["jobs"]} == {jids[0]: None, jids[1]: None}
    assert status["best"]["score"] is None or isinstance(status["best"]["score"], (int, float))


# -- the job's environment ------------------------------------------------------------------------


def test_env_numbers_and_booleans_become_strings(workdir):
    write_script(workdir, "env.sh", 'echo "n=$N f=$F b=$B s=$S"\necho "#Auptimizer:1"\n')
    record = run_one(workdir, "./env.sh", {"env": {"N": 3, "F": 0.5, "B": True, "S": "x y"}})
    assert record["status"] == "FINISHED"
    assert "n=3 f=0.5 b=true s=x y" in (workdir / "jobs" / f"{record['jid']}.1.out").read_text()


@pytest.mark.parametrize("value, shown", [(None, "null"), ([1, 2], "a list"), ({"a": 1}, "an object")])
def test_env_values_that_are_not_text_fail_the_job_naming_the_key(workdir, value, shown):
    write_script(workdir, "env.sh", 'echo "#Auptimizer:1"\n')
    record = run_one(workdir, "./env.sh", {"env": {"OK": "1", "BAD_ONE": value}})
    assert record["status"] == "FAILED"
    assert record["error"].startswith(f"runtime_args.env.BAD_ONE must be a string or a number, not {shown}")


def test_an_env_name_the_system_refuses_fails_the_job_naming_it(workdir):
    record = run_one(workdir, "./job.sh", {"env": {"A=B": "1"}})
    assert record["status"] == "FAILED"
    assert record["error"].startswith("runtime_args.env has the variable name 'A=B', which is not a valid")


# -- jobs that cannot start ----------------------------------------------------------------------


def test_a_workingdir_that_is_a_file_fails_the_job_with_one_message(workdir):
    (workdir / "afile").write_text("not a folder")
    record = run_one(workdir, "./job.sh", path=workdir / "afile")
    assert record["status"] == "FAILED"
    assert record["error"] == f"working folder {workdir / 'afile'} is a file, not a folder: fix 'workingdir'"


def test_a_jobs_folder_that_is_a_file_fails_the_job_with_one_message(workdir):
    (workdir / "jobs").write_text("in the way")
    record = run_one(workdir, "./job.sh")
    assert record["status"] == "FAILED"
    assert record["error"].startswith(f"{workdir / 'jobs'} is a file, but jobs keep their configs and logs")


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "#!/no/such/interpreter\necho hi\n",
            "its interpreter '/no/such/interpreter' (from the #! line) was not found",
        ),
        ("echo no shebang\n", "it is not a program: start it with a #! line (e.g. #!/bin/sh)"),
    ],
)
def test_a_script_that_cannot_be_executed_says_why(workdir, body, message):
    script = workdir / "broken.sh"
    script.write_text(body)
    script.chmod(0o755)
    record = run_one(workdir, "./broken.sh")
    assert record["status"] == "FAILED"
    assert record["error"] == f"could not start {script}: {message}", record["error"]


def test_a_script_that_is_not_executable_fails_the_experiment_with_one_line(workdir):
    write_script(workdir, "plain.sh", 'echo "#Auptimizer:1"\n').chmod(0o644)
    path = write_experiment(workdir, script="./plain.sh", n_samples=1)
    out = cli("run", "--headless", str(path), cwd=workdir)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr + out.stdout
    status = json.loads(cli("status", "--json", cwd=workdir).stdout)
    [job] = status["jobs"]
    assert job["status"] == "FAILED"
    assert "is not executable: run `chmod +x" in status["reason"]


def test_engine_log_has_no_traceback_for_jobs_that_fail_to_start(workdir):
    """A job that cannot start is a person's mistake: one line, never a logged traceback."""
    (workdir / "jobs").write_text("in the way")
    code = (
        "import sys; sys.path.insert(0, 'tests'); "
        "from test_job_lifecycle import run_one; from pathlib import Path; "
        f"print(run_one(Path({str(workdir)!r}), './job.sh')['error'])"
    )
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "is a file" in out.stdout
