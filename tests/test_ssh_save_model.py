"""The SSH manager's end of an experiment against a real loopback sshd (see sshd.py):
save_model's re-run of the best job on a node with its models downloaded here, `finish()`
waiting for the jobs still running, and a job whose shared SFTP client is closed under it."""

from __future__ import annotations

import json
import threading

import pytest
from aup_tui_backends import Experiment
from aup_tui_backends.config import load_experiment
from aup_tui_backends.events import EventBus, Notice
from helpers import write_experiment, write_script
from sshd import sshd_factory, sshd_server  # noqa: F401  (fixtures)
from test_ssh_manager import FAST, make_manager, node_folder, start_job, wait_for

SAVER = """
    cfg="$1"
    x=$(sed -n 's/.*"x": *\\([0-9-]*\\).*/\\1/p' "$cfg")
    echo "#Auptimizer:$x"
    if grep -q '"save_model": *true' "$cfg"; then  # what Auptimizer's aup_save_model does
        folder=$(sed -n 's/.*"folder_name": *"\\([^"]*\\)".*/\\1/p' "$cfg")
        mkdir -p "aup_models/$folder/weights"
        echo "model of x=$x" > "aup_models/$folder/model.txt"
        echo "layer 1" > "aup_models/$folder/weights/layer1.bin"
    fi
"""


@pytest.mark.parametrize("async_run", [False, True], ids=["sync", "async"])
def test_save_model_reruns_the_best_job_on_the_node_and_downloads_its_models(
    sshd_server, tmp_path, async_run
):
    folder = node_folder(tmp_path, [sshd_server], script=False)
    write_script(folder, "saver.sh", SAVER)
    node_side = tmp_path / "on the node"  # the experiment's workingdir: a folder on the node
    path = write_experiment(
        folder,
        script="./saver.sh",
        resource="node",
        workingdir=str(node_side),
        n_samples=3,
        n_parallel=1,
        target="max",
        proposer="sequence",
        parameter_config=[{"name": "x", "range": [1, 3], "type": "int", "n": 3}],
        resource_args={
            "known_hosts": str(folder / "known_hosts"),
            "save_model": True,
            "async_run": async_run,
            "async_reconnect": 0.1,
            **FAST,
        },
    )
    bus = EventBus()
    notices: list[Notice] = []
    bus.subscribe(lambda e: notices.append(e) if isinstance(e, Notice) else None)
    exp = Experiment(load_experiment(path), auppath=str(folder / ".aup"), bus=bus)
    result = exp.run()
    assert result.status == "FINISHED" and result.best_score == 3, exp.connector.errors(result.eid)
    eid = result.eid
    models = folder / "aup_models" / f"models_{eid}"  # here, beside the local script (Auptimizer's place)
    assert (models / "model.txt").read_text() == "model of x=3\n"
    assert (models / "weights" / "layer1.bin").read_text() == "layer 1\n"  # folders come too
    assert sorted(p.name for p in models.iterdir()) == ["model.txt", "weights"]  # no partial downloads left
    # the re-run's files on the node carry Auptimizer's best_job_<eid> names
    config = json.loads((node_side / "jobs" / f"best_job_{eid}.json").read_text())
    assert config["save_model"] is True and config["folder_name"] == f"models_{eid}" and config["x"] == 3
    assert "#Auptimizer:3" in (node_side / "jobs" / f"best_job_{eid}.remote.out").read_text()
    assert "#Auptimizer:3" in (folder / "jobs" / f"best_job_{eid}.out").read_text()
    assert any(
        n.level == "info" and n.message == f"the best job {result.best_jid} saved its models in {models}"
        for n in notices
    ), [n.message for n in notices]
    jobs = exp.connector.jobs(eid)  # the re-run adds no job and changes no record
    assert len(jobs) == 3 and all(j["status"] == "FINISHED" and len(j["attempts"]) == 1 for j in jobs)


def test_a_best_job_that_saves_nothing_on_the_node_is_reported(sshd_server, tmp_path):
    folder = node_folder(tmp_path, [sshd_server], script=False)
    write_script(folder, "plain.sh", 'echo "#Auptimizer:1"\n')
    node_side = tmp_path / "node"
    path = write_experiment(
        folder,
        script="./plain.sh",
        resource="node",
        workingdir=str(node_side),
        n_samples=1,
        n_parallel=1,
        proposer="sequence",
        parameter_config=[{"name": "x", "range": [1], "type": "choice"}],
        resource_args={"known_hosts": str(folder / "known_hosts"), "save_model": True, **FAST},
    )
    bus = EventBus()
    notices: list[Notice] = []
    bus.subscribe(lambda e: notices.append(e) if isinstance(e, Notice) else None)
    exp = Experiment(load_experiment(path), auppath=str(folder / ".aup"), bus=bus)
    result = exp.run()
    assert result.status == "FINISHED"  # the experiment's result stands; the models' failure is said
    remote_dir = node_side / "aup_models" / f"models_{result.eid}"
    errors = [n.message for n in notices if n.level == "error"]
    assert any("saved no models on" in m and str(remote_dir) in m for m in errors), errors
    assert not (folder / "aup_models").exists()


def test_finish_waits_for_the_jobs_running_on_nodes(sshd_server, tmp_path):
    """As Auptimizer's SSH manager (and our CPU manager): `finish()` lets running jobs end."""
    folder = node_folder(tmp_path, [sshd_server], script=False)
    gate = tmp_path / "gate"
    write_script(
        folder,
        "gated.sh",
        f"""
        echo started
        while [ ! -e '{gate}' ]; do sleep 0.02; done
        echo "#Auptimizer:2"
    """,
    )
    rm = make_manager(folder)
    job, done = start_job(rm, folder, "./gated.sh", {"x": 1})
    log = folder / "jobs" / f"{job.jid}.1.out"
    assert wait_for(lambda: log.exists() and "started" in log.read_text(), 20)
    returned: list = []
    finisher = threading.Thread(target=lambda: returned.append(rm.finish()))
    finisher.start()
    finisher.join(1.0)
    assert finisher.is_alive() and not done.is_set()  # waiting, not killing
    gate.touch()
    finisher.join(20)
    assert not finisher.is_alive() and done.is_set()
    record = rm.connector.get_job(job.jid)
    assert record["status"] == "FINISHED" and record["score"] == 2
    assert returned == [[job.jid, 2.0]]


def test_finish_after_a_stop_ends_within_its_bound(sshd_server, tmp_path):
    """A stopped job is killed on its node; `finish()` does not wait for more than the stop."""
    folder = node_folder(tmp_path, [sshd_server], script=False)
    write_script(folder, "forever.sh", 'echo started\necho "#Auptimizer:1"\nsleep 300\n')
    rm = make_manager(folder)
    job, done = start_job(rm, folder, "./forever.sh", {})
    log = folder / "jobs" / f"{job.jid}.1.out"
    assert wait_for(lambda: log.exists() and "started" in log.read_text(), 20)
    rm.stop_all(reason="experiment stopped")
    finisher = threading.Thread(target=rm.finish)
    finisher.start()
    finisher.join(rm.kill_grace + 15)
    assert not finisher.is_alive() and done.is_set()
    assert rm.connector.get_job(job.jid)["status"] == "STOPPED"


def test_a_job_whose_shared_sftp_client_is_closed_under_it_is_retried(sshd_server, tmp_path):
    """Another job's SFTP request timed out, which closes the node's shared SFTP client while this
    job holds it: this job's attempt is retried like a lost connection, not failed."""
    folder = node_folder(tmp_path, [sshd_server], script=False)
    write_script(folder, "ok.sh", 'echo "#Auptimizer:1"\n')
    rm = make_manager(folder)
    real = rm._sftp_client
    closed: list = []

    def closed_under_it(pool, name, state=None):
        sftp, lock = real(pool, name, state)
        if not closed:  # the first time: the other job's timeout drops the client this job just got
            closed.append(sftp)
            rm._sftp.drop(pool, name, sftp)
        return sftp, lock

    rm._sftp_client = closed_under_it
    try:
        job, done = start_job(rm, folder, "./ok.sh", {})
        assert done.wait(20)
        record = rm.connector.get_job(job.jid)
        assert closed and record["status"] == "FINISHED", record
        log = (folder / "jobs" / f"{job.jid}.1.out").read_text()
        assert "the SFTP session to" in log and "was closed under this job" in log and "retrying in" in log
    finally:
        rm.finish()
