"""The one status model: the strings the store records, what counts as live/final/stopped/failed,
the moves a job and an experiment may make, and the engine deciding EARLY_STOPPED from the stop
it made, never from a reason's wording."""

from __future__ import annotations

import json
import threading

import pytest
from aup_tui_backends.events import JobStopped
from aup_tui_backends.jobs import Job, log_relpath, passive_command
from aup_tui_backends.resources import get_resource_manager
from aup_tui_backends.status import ExperimentStatus, IllegalTransition, JobStatus, advance
from aup_tui_backends.store import TinyDBConnector
from helpers import write_script

STORE_STRINGS = ["RUNNING", "WAITING", "FINISHED", "FAILED", "STOPPED", "EARLY_STOPPED", "INTERRUPTED"]


def test_statuses_are_the_strings_the_store_and_status_json_carry():
    for text in STORE_STRINGS:
        status = JobStatus(text)
        assert status == text and str(status) == text and f"{status}" == text
        assert json.dumps({"status": status}) == json.dumps({"status": text})
    assert [str(s) for s in ExperimentStatus] == [
        "PENDING",
        "RUNNING",
        "FINISHED",
        "FAILED",
        "STOPPED",
        "INTERRUPTED",
    ]


def test_what_each_status_counts_as():
    assert {s for s in JobStatus if s.is_live} == {JobStatus.RUNNING, JobStatus.WAITING}
    assert {s for s in JobStatus if s.is_stopped} == {JobStatus.STOPPED, JobStatus.EARLY_STOPPED}
    assert {s for s in JobStatus if s.is_failed} == {JobStatus.FAILED, JobStatus.INTERRUPTED}
    assert {s for s in JobStatus if s.is_final} == {
        JobStatus.FINISHED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
        JobStatus.EARLY_STOPPED,
        JobStatus.INTERRUPTED,
    }
    assert ExperimentStatus.RUNNING.is_live and ExperimentStatus.STOPPED.is_final


def test_a_job_moves_as_the_model_allows_and_an_illegal_move_is_refused(tmp_path):
    job = Job("job.sh", {"x": 1}, path=str(tmp_path))
    assert job.status is JobStatus.QUEUED
    with pytest.raises(IllegalTransition, match="a job can't go from QUEUED to FINISHED"):
        job.move_to(JobStatus.FINISHED)  # never started
    for step in (JobStatus.RUNNING, JobStatus.WAITING, JobStatus.RUNNING, JobStatus.RETRY, JobStatus.RUNNING):
        job.move_to(step)
    job.move_to(JobStatus.FINISHED)
    with pytest.raises(IllegalTransition, match="from FINISHED to FAILED"):
        job.move_to(JobStatus.FAILED)  # a finished job's record is never rewritten as failed
    with pytest.raises(IllegalTransition):
        job.move_to(JobStatus.WAITING)
    assert job.status is JobStatus.FINISHED  # a refused move changes nothing
    job.move_to(JobStatus.RUNNING)  # a new attempt (rerun, save_model's re-run) starts again


def test_an_experiment_moves_as_the_model_allows():
    assert advance(ExperimentStatus.PENDING, ExperimentStatus.RUNNING) is ExperimentStatus.RUNNING
    assert advance(ExperimentStatus.RUNNING, ExperimentStatus.STOPPED) is ExperimentStatus.STOPPED
    assert advance(ExperimentStatus.INTERRUPTED, ExperimentStatus.RUNNING) is ExperimentStatus.RUNNING
    with pytest.raises(IllegalTransition, match="an experiment can't go from PENDING to FINISHED"):
        advance(ExperimentStatus.PENDING, ExperimentStatus.FINISHED)
    with pytest.raises(IllegalTransition):
        advance(ExperimentStatus.FINISHED, ExperimentStatus.FAILED)
    with pytest.raises(IllegalTransition):
        advance(ExperimentStatus.RUNNING, JobStatus.RUNNING)  # type: ignore[type-var]


def test_the_passive_command_and_the_log_path_are_made_in_one_place(tmp_path):
    wd = str(tmp_path / "exp")
    assert passive_command(wd, "train.sh", 7) == f"cd {wd} && ./train.sh jobs/7.json"
    assert passive_command(wd, "./bin/../train.sh", 7) == f"cd {wd} && ./train.sh jobs/7.json"
    assert passive_command(wd, "/opt/train.sh", 7) == f"cd {wd} && /opt/train.sh jobs/7.json"
    assert passive_command("/my exp", "t.sh", 2) == "cd '/my exp' && ./t.sh jobs/2.json"
    job = Job("train.sh", {}, path=wd)
    job.jid, job.attempt = 7, 2
    assert job.shell_command == passive_command(wd, "train.sh", 7)
    assert job.log_path() == f"{wd}/{log_relpath(7, 2)}" == f"{wd}/jobs/7.2.out"


# -- the engine decides EARLY_STOPPED from the stop it made -------------------------------------


@pytest.fixture
def cpu(workdir):
    auppath = str(workdir / ".aup")  # 2 CPU slots
    connector = TinyDBConnector(auppath)
    eid = connector.start_experiment(
        "me",
        "stops",
        {},
        n_samples=2,
        target="max",
        resource="cpu",
        workingdir=str(workdir),
        script="slow.sh",
        path=None,
        n_parallel=2,
    )
    write_script(workdir, "slow.sh", "echo '#Auptimizer:0.5'\nsleep 30\n")
    rm = get_resource_manager("cpu", connector, 2, auppath=auppath, eid=eid)
    yield rm, connector, eid
    rm.stop_all()
    rm.finish()
    connector.close()


def _started(rm, connector, workdir, jid):
    job = Job("slow.sh", {"x": jid}, path=str(workdir))
    job.jid = jid
    done = threading.Event()
    rid = rm.get_available("me", "cpu")
    rm.run_job(job, rid, None, lambda score, _jid: done.set())
    return job, done


def test_the_stop_decides_early_stopped_not_the_reasons_wording(cpu, workdir):
    rm, connector, eid = cpu
    stopped: list[JobStopped] = []
    rm.bus.subscribe(stopped.append, kinds=(JobStopped,))
    by_person, by_person_done = _started(rm, connector, workdir, connector.new_jid())
    by_policy, by_policy_done = _started(rm, connector, workdir, connector.new_jid())
    assert rm.stop_job(by_person.jid, reason="early stopped the run by hand")  # a person's words
    assert rm.stop_job(by_policy.jid, reason="median rule: 0.5 < 0.7", status=JobStatus.EARLY_STOPPED)
    assert by_person_done.wait(20) and by_policy_done.wait(20)
    events = {e.jid: e for e in stopped}
    assert events[by_person.jid].status is JobStatus.STOPPED
    assert events[by_policy.jid].status is JobStatus.EARLY_STOPPED
    assert events[by_policy.jid].reason == "median rule: 0.5 < 0.7"
    records = {j["jid"]: j for j in connector.jobs(eid)}
    assert records[by_person.jid]["status"] == "STOPPED"
    assert records[by_policy.jid]["status"] == "EARLY_STOPPED"


def test_run_job_refuses_a_running_job_before_taking_a_resource(cpu, workdir):
    rm, connector, eid = cpu
    job, done = _started(rm, connector, workdir, connector.new_jid())
    free = connector.get_available_resource("cpu")
    with pytest.raises(IllegalTransition, match="from RUNNING to RUNNING"):
        rm.run_job(job, free[0], None, lambda score, jid: None)
    assert connector.get_available_resource("cpu") == free  # nothing taken
    rm.stop_job(job.jid)
    assert done.wait(20)
