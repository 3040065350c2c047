"""Resource managers and the experiment loop, in-process with real job processes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from aup_tui_backends import Experiment
from aup_tui_backends.config import load_experiment
from aup_tui_backends.errors import ConfigError
from aup_tui_backends.events import (
    EventBus,
    JobFailed,
    JobIntermediate,
    JobStarted,
    Notice,
    PassiveResultWanted,
)
from aup_tui_backends.jobs import ResultParseError
from aup_tui_backends.setup import init_aup
from helpers import pid_alive, write_experiment, write_script


def run(folder: Path, bus: EventBus | None = None, **overrides):
    exp = Experiment(
        load_experiment(write_experiment(folder, **overrides)), auppath=str(folder / ".aup"), bus=bus
    )
    return exp, exp.run()


def test_cpu_jobs_finish_with_their_scores_and_best(workdir):
    exp, result = run(workdir, n_samples=6, target="max")
    jobs = exp.connector.jobs(result.eid)
    assert result.status == "FINISHED" and result.counts == {"FINISHED": 6}
    for job in jobs:
        assert job["score"] == pytest.approx(job["config"]["x"])
        assert (workdir / "jobs" / f"{job['jid']}.json").exists()
        assert "#Auptimizer:" in (workdir / "jobs" / f"{job['jid']}.1.out").read_text()
    best = max(jobs, key=lambda j: j["score"])
    assert (result.best_jid, result.best_score) == (best["jid"], best["score"])


def test_each_cpu_job_gets_its_own_environment(workdir):
    write_script(
        workdir,
        "env.sh",
        """
        echo "cuda=[$CUDA_VISIBLE_DEVICES] extra=[$EXTRA]"
        echo "#Auptimizer:1"
    """,
    )
    os.environ["CUDA_VISIBLE_DEVICES"] = "7"
    try:
        exp, result = run(workdir, script="./env.sh", runtime_args={"env": {"EXTRA": "yes"}})
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "7"  # ours untouched
    finally:
        del os.environ["CUDA_VISIBLE_DEVICES"]
    for log in (workdir / "jobs").glob("*.out"):
        assert "cuda=[] extra=[yes]" in log.read_text()


def test_gpu_jobs_see_only_their_card(tmp_path):
    init_aup(str(tmp_path / ".aup"), gpu=["0", "0", "3"])
    write_script(
        tmp_path,
        "gpu.sh",
        """
        echo "card=$CUDA_VISIBLE_DEVICES"
        sleep 0.2
        echo "#Auptimizer:1"
    """,
    )
    exp, result = run(tmp_path, script="./gpu.sh", resource="gpu", n_parallel=3, n_samples=6)
    assert result.status == "FINISHED"
    cards = {}
    for job in exp.connector.jobs(result.eid):
        card = (tmp_path / "jobs" / f"{job['jid']}.1.out").read_text().split("card=")[1].split()[0]
        cards[job["jid"]] = card
        expected = exp.resource_manager.mapping[job["rid"]]
        assert card == expected
    assert set(cards.values()) <= {"0", "3"}


def test_nonzero_exit_fails_the_job_but_keeps_its_results(workdir):
    write_script(
        workdir,
        "bad.sh",
        """
        echo "#Auptimizer:0.5"
        echo "boom" >&2
        exit 3
    """,
    )
    exp, result = run(
        workdir, script="./bad.sh", n_samples=2, job_failure={"ignore_fail": True, "job_retries": 0}
    )
    assert result.status == "FAILED"  # no job finished
    assert result.reason.startswith("no job finished with a score (2 failed; see their logs in ")
    for job in exp.connector.jobs(result.eid):
        assert job["status"] == "FAILED"
        assert job["score"] == 0.5
        assert "exited with status 3" in job["error"] and "boom" in job["error"]
        assert [r["values"] for r in exp.connector.intermediate_results(result.eid, job["jid"])] == [[0.5]]


@pytest.mark.parametrize(
    "body, message",
    [
        ("echo no result here", "printed no '#Auptimizer:<score>' line"),
        ("echo '#Auptimizer:NaNx'", "bad result line '#Auptimizer:NaNx'"),
    ],
)
def test_protocol_mistakes_fail_the_job_with_a_message(workdir, body, message):
    write_script(workdir, "odd.sh", body)
    exp, result = run(workdir, script="./odd.sh", n_samples=1)
    [job] = exp.connector.jobs(result.eid)
    assert job["status"] == "FAILED" and message in job["error"]
    assert result.status == "FAILED"


def test_a_failed_job_without_ignore_fail_stops_the_experiment(workdir):
    write_script(workdir, "bad.sh", "exit 1")
    exp, result = run(workdir, script="./bad.sh", n_samples=10, n_parallel=1)
    assert result.status == "FAILED"
    assert len(exp.connector.jobs(result.eid)) == 1
    assert any("stopping the experiment" in e["message"] for e in exp.connector.errors(result.eid))
    [job] = exp.connector.jobs(result.eid)
    assert result.reason.startswith(f"job {job['jid']} failed: bad.sh exited with status 1")


def test_failed_job_is_retried_on_another_resource(workdir):
    # fails on its first attempt only
    write_script(
        workdir,
        "flaky.sh",
        """
        if [ ! -e "$1.seen" ]; then touch "$1.seen"; exit 1; fi
        echo "#Auptimizer:2"
    """,
    )
    exp, result = run(
        workdir,
        script="./flaky.sh",
        n_samples=1,
        n_parallel=1,
        job_failure={"ignore_fail": False, "job_retries": 2},
    )
    [job] = exp.connector.jobs(result.eid)
    assert job["status"] == "FINISHED" and job["score"] == 2
    first, second = job["attempts"]
    assert first["status"] == "FAILED" and second["status"] == "FINISHED"
    assert first["rid"] != second["rid"]
    assert (workdir / "jobs" / f"{job['jid']}.1.out").exists() and (
        workdir / "jobs" / f"{job['jid']}.2.out"
    ).exists()


def test_flooding_output_is_logged_not_parsed(workdir):
    write_script(
        workdir,
        "flood.py",
        """
        import sys
        sys.stdout.write("x" * (3 << 20) + "\\n")
        print("#Auptimizer:4")
    """,
        shebang="#!/usr/bin/env python3",
    )
    exp, result = run(workdir, script="./flood.py", n_samples=1)
    [job] = exp.connector.jobs(result.eid)
    assert job["status"] == "FINISHED" and job["score"] == 4
    assert (workdir / "jobs" / f"{job['jid']}.1.out").stat().st_size > 3 << 20


def test_stop_job_kills_the_whole_process_group_within_a_second(workdir):
    write_script(
        workdir,
        "tree.sh",
        """
        sleep 300 &
        echo "child $!" > "$1.pids"
        echo "#Auptimizer:1"
        wait
    """,
    )
    bus = EventBus()
    started = threading.Event()
    bus.subscribe(lambda e: started.set() if isinstance(e, JobIntermediate) else None)
    exp = Experiment(
        load_experiment(write_experiment(workdir, script="./tree.sh", n_samples=1)),
        auppath=str(workdir / ".aup"),
        bus=bus,
    )
    runner = threading.Thread(target=exp.run)
    runner.start()
    assert started.wait(10)
    [jid] = list(exp.resource_manager.jobs)
    child = int((workdir / "jobs" / f"{jid}.json.pids").read_text().split()[1])
    t0 = time.monotonic()
    assert exp.stop_job(jid)
    while pid_alive(child) and time.monotonic() - t0 < 5:
        time.sleep(0.02)
    assert time.monotonic() - t0 < 1.0, "the grandchild outlived the stop by more than a second"
    runner.join(10)
    job = exp.connector.get_job(jid, exp.eid)
    assert job["status"] == "STOPPED" and job["score"] == 1


def test_early_stopping_stops_a_bad_job(workdir):
    write_script(
        workdir,
        "curve.py",
        """
        import json, sys, time
        x = json.load(open(sys.argv[1]))["x"]
        for step in range(6):
            print(f"#Auptimizer:{x}", flush=True)
            time.sleep(0.05)
    """,
        shebang="#!/usr/bin/env python3",
    )
    exp, result = run(
        workdir,
        script="./curve.py",
        n_samples=6,
        n_parallel=2,
        proposer="sequence",
        parameter_config=[{"name": "x", "range": [1, 6], "type": "int"}],
        resource_args={"early_stop": {"aup_policy": "median", "aup_policy_steps": 2, "warmup": 2}},
    )
    statuses = {j["config"]["x"]: j["status"] for j in exp.connector.jobs(result.eid)}
    assert "EARLY_STOPPED" in statuses.values()
    assert statuses[6] == "FINISHED"  # the best is never cut
    # the job's record says which rule cut it and with what numbers
    errors = [j["error"] for j in exp.connector.jobs(result.eid) if j["status"] == "EARLY_STOPPED"]
    assert all(e.startswith("early stopped after ") and " — median rule: its mean " in e for e in errors), (
        errors
    )


def test_passive_job_is_answered_through_the_api(tmp_path):
    init_aup(str(tmp_path / ".aup"), passive=True)
    write_script(tmp_path, "job.sh", "echo '#Auptimizer:1'")
    bus = EventBus()
    wanted: list[PassiveResultWanted] = []
    cond = threading.Condition()

    def on_event(e):
        if isinstance(e, PassiveResultWanted):
            with cond:
                wanted.append(e)
                cond.notify_all()

    bus.subscribe(on_event)
    exp = Experiment(
        load_experiment(write_experiment(tmp_path, resource="passive", n_samples=3)),
        auppath=str(tmp_path / ".aup"),
        bus=bus,
    )
    runner = threading.Thread(target=exp.run)
    runner.start()
    rm = None
    answers = ["#Auptimizer:0.2\nlog line\n#Auptimizer:0.4", "0.9", None]
    for i, answer in enumerate(answers):
        with cond:
            assert cond.wait_for(lambda: len(wanted) > i, 10)
        event = wanted[i]
        assert f"jobs/{event.jid}.json" in event.command and os.path.exists(event.config_path)
        rm = exp.resource_manager
        assert exp.connector.get_job(event.jid, exp.eid)["status"] == "WAITING"
        with pytest.raises(ResultParseError):
            rm.submit_result(event.jid, "garbage")  # job keeps waiting
        if answer is None:
            rm.mark_failed(event.jid, "out of memory")
        else:
            rm.submit_result(event.jid, answer)
    runner.join(10)
    jobs = {j["jid"]: j for j in exp.connector.jobs(exp.eid)}
    assert [jobs[e.jid]["score"] for e in wanted[:2]] == [0.4, 0.9]
    assert jobs[wanted[2].jid]["status"] == "FAILED" and jobs[wanted[2].jid]["error"] == "out of memory"
    assert [r["values"] for r in exp.connector.intermediate_results(exp.eid, wanted[0].jid)] == [[0.2], [0.4]]


def test_n_parallel_above_free_resources_runs_with_what_there_is(workdir):
    bus = EventBus()
    notices: list[str] = []
    running: list[int] = []
    peak = []
    bus.subscribe(lambda e: notices.append(e.message) if isinstance(e, Notice) else None)

    def track(e):
        if isinstance(e, JobStarted):
            running.append(e.jid)
            peak.append(len(running))
        elif isinstance(e, (JobFailed,)) or type(e).__name__ in ("JobFinished", "JobStopped"):
            running.remove(e.jid)

    bus.subscribe(track)
    exp, result = run(workdir, bus=bus, n_parallel=5, n_samples=6)
    assert result.status == "FINISHED"
    assert any("only 2 'cpu' resources are free: running 2 at a time" in n for n in notices)
    assert max(peak) <= 2


def test_node_resource_without_nodes_is_a_clear_error(workdir):
    with pytest.raises(ConfigError, match="no 'node' resource in .*env.ini — add some with `aup-tui init"):
        run(workdir, resource="node")


def test_importing_the_engine_loads_no_heavy_library():
    """paramiko, boto3 and pynvml load only where used, at run time: import-linter sees every
    import statement, lazy ones included, so this is checked here. (That the engine never
    imports Textual or the UI at all is an import-linter contract: scripts/check.)"""
    import subprocess
    import sys

    code = (
        "import aup_tui_backends, aup_tui_backends.experiment, sys; "
        "assert not {'paramiko', 'boto3', 'pynvml'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)
