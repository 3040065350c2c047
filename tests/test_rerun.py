"""`aup-tui rerun --failed`: a finished experiment's failed jobs run again as their next attempt,
in the same experiment (real processes, the real store)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import cli, write_experiment, write_script

#: fails for x = 3 and 6 until the file `fixed` exists
FLAKY_JOB = """
x=$(sed 's/.*"x": *\\([-0-9.e]*\\).*/\\1/' "$1")
if [ ! -f fixed ] && [ $((x % 3)) = 0 ]; then echo "x=$x breaks" >&2; exit 2; fi
echo "#Auptimizer:$x"
"""


def status(folder: Path) -> dict:
    out = cli("status", "--json", cwd=folder)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def by_status(doc: dict) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for job in doc["jobs"]:
        out.setdefault(job["status"], []).append(job["config"]["x"])
    return out


def attempts(folder: Path, jid: int) -> list[str]:
    from aup_tui_backends.store import TinyDBConnector

    connector = TinyDBConnector(str(folder / ".aup"))
    try:
        return [a["status"] for a in connector.get_job(jid)["attempts"]]
    finally:
        connector.close()


def flaky_grid(folder: Path, **overrides) -> None:
    write_script(folder, "job.sh", FLAKY_JOB)
    settings = {
        "proposer": "sequence",
        "n_samples": 6,
        "job_failure": {"ignore_fail": True, "job_retries": 0},
        "parameter_config": [{"name": "x", "range": [1, 6], "type": "int"}],
    }
    write_experiment(folder, **{**settings, **overrides})


def test_rerun_failed_runs_the_failed_configs_again_until_they_pass(workdir):
    flaky_grid(workdir)
    assert cli("run", "--headless", "experiment.json", cwd=workdir).returncode == 0
    first = status(workdir)
    assert by_status(first) == {"FINISHED": [1, 2, 4, 5], "FAILED": [3, 6]}
    failed = [j["jid"] for j in first["jobs"] if j["status"] == "FAILED"]
    scores = {j["jid"]: j["score"] for j in first["jobs"] if j["status"] == "FINISHED"}

    still = cli("rerun", "--failed", "--headless", cwd=workdir)  # not fixed yet: they fail again
    assert still.returncode == 0, still.stderr
    assert (
        f"re-running 2 failed job(s) of experiment 1 'test'; job(s) {failed[0]}, {failed[1]}" in still.stderr
    )
    assert "failed 2" in still.stderr  # the progress counts them
    assert by_status(status(workdir)) == {"FINISHED": [1, 2, 4, 5], "FAILED": [3, 6]}

    (workdir / "fixed").touch()
    fixed = cli("rerun", "1", "--failed", "--headless", cwd=workdir)
    assert fixed.returncode == 0, fixed.stderr
    assert "experiment 1 'test' FINISHED: 6 finished" in fixed.stderr  # the summary's totals
    after = status(workdir)
    assert after["status"] == "FINISHED" and by_status(after) == {"FINISHED": [1, 2, 3, 4, 5, 6]}
    assert len(after["jobs"]) == 6  # new attempts of the same jobs, not new jobs
    for jid in failed:
        assert attempts(workdir, jid) == ["FAILED", "FAILED", "FINISHED"]
    for job in after["jobs"]:
        if job["jid"] in scores:
            assert job["score"] == scores[job["jid"]] and attempts(workdir, job["jid"]) == ["FINISHED"]
    assert after["best"]["score"] == 6.0
    log = workdir / "jobs" / f"{failed[0]}.3.out"
    assert log.read_text().strip().endswith("#Auptimizer:3")  # each attempt's log of its own

    nothing = cli("rerun", "--failed", cwd=workdir)
    assert nothing.returncode == 1
    assert nothing.stderr.strip() == "aup-tui: experiment 1 has no failed job to run again"


def test_rerun_of_an_unfinished_experiment_points_to_resume(workdir):
    flaky_grid(workdir, job_failure={"ignore_fail": False, "job_retries": 0}, n_parallel=1)
    assert cli("run", "--headless", "experiment.json", cwd=workdir).returncode == 1  # x=3 fails it
    out = cli("rerun", "1", "--failed", cwd=workdir)
    assert out.returncode == 1
    assert "`aup-tui resume 1` runs its failed jobs again and the rest of its budget" in out.stderr


def test_rerun_needs_failed_and_explains_its_arguments(workdir):
    out = cli("rerun", cwd=workdir)
    assert out.returncode == 2 and "--failed" in out.stderr
    helptext = cli("rerun", "--help", cwd=workdir).stdout
    assert "next attempt" in helptext and "--headless" in helptext and "EID" in helptext
