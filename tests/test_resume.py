"""`aup-tui resume`: an experiment killed (kill -9), stopped or failed continues under its own id,
as a person would use it: real processes, the real store."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from helpers import cli, cli_popen, write_experiment, write_script

#: the first FAST jobs finish at once; the others wait for the file `go`, and leave their pid
#: beside their config (jobs/<jid>.json.pid) so the test can kill the ones a kill -9 orphaned
GATED_JOB = """
x=$(sed 's/.*"x": *\\([-0-9.e]*\\).*/\\1/' "$1")
echo $$ > "$1.pid"
for n in $(seq 1 {fast}); do
  if mkdir "ticket.$n" 2>/dev/null; then echo "#Auptimizer:$x"; exit 0; fi
done
while [ ! -f go ]; do sleep 0.05; done
echo "#Auptimizer:$x"
"""


def gated(folder: Path, fast: int) -> None:
    write_script(folder, "job.sh", GATED_JOB.replace("{fast}", str(fast)))


def grid(folder: Path, n: int = 8, **overrides) -> None:
    write_experiment(
        folder,
        proposer="sequence",
        n_samples=n,
        parameter_config=[{"name": "x", "range": [1, n], "type": "int"}],
        **overrides,
    )


def status(folder: Path) -> dict:
    out = cli("status", "--json", cwd=folder)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_for(predicate, timeout: float = 30.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def counts(doc: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for job in doc["jobs"]:
        out[job["status"]] = out.get(job["status"], 0) + 1
    return out


def attempts(folder: Path, jid: int) -> list[dict]:
    from aup_tui_backends.store import TinyDBConnector

    connector = TinyDBConnector(str(folder / ".aup"))
    try:
        return connector.get_job(jid)["attempts"]
    finally:
        connector.close()


def start_gated_run(folder: Path, finished: int, running: int = 2):
    """A headless run with `finished` jobs done and `running` waiting at the gate."""
    proc = cli_popen("run", "--headless", "experiment.json", cwd=folder, stdout=-1, stderr=-1)

    def ready() -> bool:
        from aup_tui_backends.store import TinyDBConnector

        connector = TinyDBConnector(str(folder / ".aup"))
        try:
            c = counts({"jobs": connector.jobs(1)}) if connector.experiments() else {}
        finally:
            connector.close()
        return c.get("FINISHED", 0) == finished and c.get("RUNNING", 0) == running

    wait_for(ready, what=f"{finished} finished and {running} running")
    return proc


def kill_orphans(folder: Path) -> None:
    for pidfile in (folder / "jobs").glob("*.json.pid"):
        try:
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def test_kill_9_then_resume_keeps_finished_jobs_and_runs_the_rest_once(workdir):
    gated(workdir, fast=3)
    grid(workdir)
    proc = start_gated_run(workdir, finished=3)
    try:
        refused = cli("resume", "--headless", cwd=workdir)
        assert refused.returncode == 1
        assert "is running now" in refused.stderr  # one clear line, nothing started
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kill_orphans(workdir)
    before = status(workdir)
    assert before["status"] == "INTERRUPTED"
    assert counts(before) == {"FINISHED": 3, "INTERRUPTED": 2}
    kept = {j["jid"]: j for j in before["jobs"] if j["status"] == "FINISHED"}
    interrupted = sorted(j["jid"] for j in before["jobs"] if j["status"] == "INTERRUPTED")

    (workdir / "go").touch()
    out = cli("resume", "--headless", cwd=workdir)
    assert out.returncode == 0, out.stderr
    assert "resuming experiment 1 'test' (interrupted): 3 of 8 finished, 5 to run" in out.stderr
    assert f"job(s) {', '.join(map(str, interrupted))} run again as their next attempt" in out.stderr

    after = status(workdir)
    assert after["eid"] == 1 and after["status"] == "FINISHED"
    assert counts(after) == {"FINISHED": 8}  # n_samples, and no row left interrupted
    xs = sorted(j["config"]["x"] for j in after["jobs"])
    assert xs == list(range(1, 9))  # every grid point once: none of the done ones proposed again
    for job in after["jobs"]:
        if job["jid"] in kept:
            assert job["score"] == kept[job["jid"]]["score"]  # no finished result lost or re-run
            assert len(attempts(workdir, job["jid"])) == 1
    for jid in interrupted:
        assert [a["status"] for a in attempts(workdir, jid)] == ["INTERRUPTED", "FINISHED"]
    new = [j["jid"] for j in after["jobs"] if j["jid"] not in kept and j["jid"] not in interrupted]
    assert len(new) == 3 and min(new) > max(kept) and min(new) > max(interrupted)
    assert after["best"] == {
        "jid": next(j["jid"] for j in after["jobs"] if j["config"]["x"] == 8),
        "score": 8.0,
    }


def test_stop_then_resume_runs_the_jobs_stopped_with_it_again_not_one_stopped_alone(workdir):
    gated(workdir, fast=2)
    grid(workdir, n=6)
    proc = start_gated_run(workdir, finished=2)
    try:
        alone = min(j["jid"] for j in status(workdir)["jobs"] if j["status"] == "RUNNING")
        assert cli("stop", "--job", str(alone), cwd=workdir).returncode == 0  # a person's choice
        wait_for(
            lambda: counts(status(workdir)) == {"FINISHED": 2, "STOPPED": 1, "RUNNING": 2}, what="next job"
        )
        assert cli("stop", "--experiment", "1", cwd=workdir).returncode == 0
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    stopped = status(workdir)
    assert stopped["status"] == "STOPPED" and counts(stopped) == {"FINISHED": 2, "STOPPED": 3}

    (workdir / "go").touch()
    out = cli("resume", "1", "--headless", cwd=workdir)
    assert out.returncode == 0, out.stderr
    assert "(stopped): 2 of 6 finished, 3 to run" in out.stderr
    done = status(workdir)
    assert done["status"] == "FINISHED" and counts(done) == {"FINISHED": 5, "STOPPED": 1}
    assert sorted(j["config"]["x"] for j in done["jobs"]) == list(range(1, 7))
    assert [a["status"] for a in attempts(workdir, alone)] == ["STOPPED"]  # stays as the person left it


def test_a_finished_experiment_is_not_resumed_and_says_what_to_do(workdir):
    write_script(
        workdir,
        "job.sh",
        """
        x=$(sed 's/.*"x": *\\([-0-9.e]*\\).*/\\1/' "$1")
        [ "$x" = 2 ] && exit 3
        echo "#Auptimizer:$x"
        """,
    )
    grid(workdir, n=3, job_failure={"ignore_fail": True})
    assert cli("run", "--headless", "experiment.json", cwd=workdir).returncode == 0
    out = cli("resume", "--headless", cwd=workdir)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "aup-tui: experiment 1 finished: nothing to resume — "
        "`aup-tui rerun 1 --failed` runs its 1 failed job(s) again"
    )
    missing = cli("resume", "7", cwd=workdir)
    assert missing.returncode == 1 and "no experiment 7" in missing.stderr


def test_resume_of_a_failed_experiment_runs_the_failed_job_again_once_fixed(workdir):
    write_script(
        workdir,
        "job.sh",
        """
        x=$(sed 's/.*"x": *\\([-0-9.e]*\\).*/\\1/' "$1")
        if [ "$x" = 2 ] && [ ! -f fixed ]; then echo "x=2 breaks" >&2; exit 3; fi
        echo "#Auptimizer:$x"
        """,
    )
    grid(workdir, n=4, n_parallel=1)
    assert cli("run", "--headless", "experiment.json", cwd=workdir).returncode == 1
    failed = status(workdir)
    assert failed["status"] == "FAILED" and counts(failed) == {"FINISHED": 1, "FAILED": 1}
    (workdir / "fixed").touch()
    out = cli("resume", cwd=workdir)  # no terminal here: as `run`, it goes on headless
    assert out.returncode == 0, out.stderr
    assert "no terminal for the dashboard: running headless" in out.stderr
    done = status(workdir)
    assert done["status"] == "FINISHED" and counts(done) == {"FINISHED": 4}
    assert [a["status"] for a in attempts(workdir, failed["jobs"][1]["jid"])] == ["FAILED", "FINISHED"]


def test_the_tpe_proposer_is_rebuilt_from_the_finished_jobs(workdir):
    pytest.importorskip("optuna")
    from aup_tui_backends.resume import plan_resume
    from aup_tui_backends.store import TinyDBConnector

    gated(workdir, fast=2)
    write_experiment(workdir, proposer="tpe", n_samples=5)
    proc = start_gated_run(workdir, finished=2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    kill_orphans(workdir)
    connector = TinyDBConnector(str(workdir / ".aup"))
    try:
        connector.recover()
        plan = plan_resume(connector, 1)
        trials = plan.proposer.study.get_trials(deepcopy=False)
        finished = {j["config"]["x"]: j["score"] for j in connector.jobs(1) if j["status"] == "FINISHED"}
        interrupted = sorted(j["config"]["x"] for j in connector.jobs(1) if j["status"] == "INTERRUPTED")
    finally:
        connector.close()
    complete = {t.params["x"]: -t.value for t in trials if t.state.name == "COMPLETE"}  # maximised
    assert complete == finished  # told as completed trials, with their scores
    waiting = [t.system_attrs["fixed_params"]["x"] for t in trials if t.state.name == "WAITING"]
    assert sorted(waiting) == interrupted  # enqueued: proposed again first, as their next attempt
    assert plan.to_run == 3
    (workdir / "go").touch()
    out = cli("resume", "--headless", cwd=workdir)
    assert out.returncode == 0, out.stderr
    done = status(workdir)
    assert counts(done) == {"FINISHED": 5} and len(done["jobs"]) == 5


@pytest.mark.parametrize("name", ["tpe", "hyperopt", "cmaes", "qmc", "gp", "spearmint"])
def test_a_learning_proposer_proposes_the_unfinished_jobs_again_first_within_the_budget(name):
    from aup_tui_backends.config import validate_experiment
    from aup_tui_backends.proposers import config_key, get_proposer

    space = [
        {"name": "lr", "range": [0.001, 0.1], "type": "float"},
        {"name": "layers", "range": [1, 4], "type": "int"},
        {"name": "opt", "range": ["sgd", "adam"], "type": "choice"},
    ]
    data = {"name": "t", "script": "t.py", "resource": "cpu", "target": "max", "proposer": name}
    proposer = get_proposer(validate_experiment({**data, "parameter_config": space, "n_samples": 6}))
    done = [({"lr": 0.01, "layers": 2, "opt": "adam"}, 0.5), ({"lr": 0.05, "layers": 1, "opt": "sgd"}, None)]
    unfinished = [{"lr": 0.02, "layers": 3, "opt": "sgd"}, {"lr": 0.09, "layers": 4, "opt": "adam"}]
    proposer.replay(done)
    proposer.enqueue(unfinished)
    jobs = []
    while (job := proposer.get()) is not None:
        jobs.append(job)
        proposer.update(1.0, job)
    assert [config_key(j) for j in jobs[:2]] == [config_key(c) for c in unfinished]
    assert len(jobs) == 4  # 6 less the 2 replayed: the unfinished ones are part of what is left


def test_the_store_restarts_an_ended_experiment_once_and_never_one_a_live_process_runs(tmp_path):
    from aup_tui_backends.store import TinyDBConnector

    connector = TinyDBConnector(str(tmp_path / ".aup"))
    try:
        eid = connector.start_experiment("me", "e", {"name": "e"}, n_samples=3)
        assert connector.start_experiment_by_eid(eid) is None  # this (live) process runs it
        connector.end_experiment(eid, "FAILED", reason="job 1 failed")
        started = connector.get_experiment(eid)["start"]
        doc = connector.start_experiment_by_eid(eid)
        assert doc is not None and doc["status"] == "RUNNING" and doc["end"] is None and "reason" not in doc
        assert connector.get_experiment(eid)["start"] == started  # the same experiment goes on
        assert connector.start_experiment_by_eid(eid) is None  # a second resume is refused
        assert connector.start_experiment_by_eid(eid + 1) is None
    finally:
        connector.close()
