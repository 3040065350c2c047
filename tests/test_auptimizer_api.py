"""Code written against Auptimizer 2.0's resource-manager API runs unchanged against ours.

Each test uses the API the way Auptimizer's own resource-manager tests and its users do (a
relative job path, `run`/`run_job` with a callback, `finish()` while jobs run, Auptimizer's
keyword arguments, subclassing a manager) and asserts what Auptimizer's API promises.
Real job processes, a real store.
"""

from __future__ import annotations

import inspect
import json
import os
import threading
from pathlib import Path

import pytest
from aup_tui_backends import (
    AbstractResourceManager,
    ConfigError,
    CPUResourceManager,
    Experiment,
    GPUResourceManager,
    Job,
    JobError,
    PassiveResourceManager,
    get_resource_manager,
)
from aup_tui_backends.errors import UnknownArgumentError
from aup_tui_backends.events import EventBus, Notice
from aup_tui_backends.setup import init_aup
from aup_tui_backends.store import TinyDBConnector
from helpers import write_experiment, write_script

GATED = """
    touch "$1.started"
    i=0
    while [ ! -e "$1.go" ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done
    echo "#Auptimizer:{score}"
"""


@pytest.fixture
def store(workdir: Path):
    connector = TinyDBConnector(str(workdir / ".aup"))
    yield connector
    connector.close()


def _eid(connector: TinyDBConnector, workdir: Path) -> int:
    return connector.start_experiment(
        "me", "api", {}, n_samples=1, target="max", resource="cpu", workingdir=str(workdir), script="./job.sh"
    )


def _wait_for(path: Path, timeout: float = 15) -> bool:
    event = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if path.exists():
            return True
        event.wait(0.01)
    return path.exists()


# -- the class tree -------------------------------------------------------------------------------


def test_the_managers_form_the_seeds_class_tree():
    from aup_tui_backends.resources.aws import AWSResourceManager
    from aup_tui_backends.resources.local import LocalProcessManager
    from aup_tui_backends.resources.ssh import SSHResourceManager

    assert issubclass(CPUResourceManager, AbstractResourceManager)
    assert issubclass(GPUResourceManager, CPUResourceManager)
    assert issubclass(SSHResourceManager, CPUResourceManager)
    assert issubclass(AWSResourceManager, SSHResourceManager)
    assert issubclass(PassiveResourceManager, AbstractResourceManager)
    assert not issubclass(PassiveResourceManager, CPUResourceManager)
    assert LocalProcessManager is CPUResourceManager  # the former name still imports
    for cls in (CPUResourceManager, GPUResourceManager, SSHResourceManager, AWSResourceManager):
        params = inspect.signature(cls.finish).parameters
        assert list(params)[1:] == ["maximize", "status"], cls
        assert (params["maximize"].default, params["status"].default) == (True, "FINISHED")


def test_the_factory_builds_instances_of_the_tree(tmp_path, store):
    init_aup(str(tmp_path / ".aup"), gpu=["0"], overwrite=True)
    gpu = get_resource_manager("gpu", store, 1, auppath=str(tmp_path / ".aup"))
    assert isinstance(gpu, CPUResourceManager) and isinstance(gpu, AbstractResourceManager)
    assert isinstance(get_resource_manager("cpu", store, 1), CPUResourceManager)
    # Auptimizer's own test builds managers without a connector or n_parallel
    assert isinstance(get_resource_manager("passive", None, None), AbstractResourceManager)


def test_an_unknown_resource_type_is_the_key_error_auptimizer_raises():
    with pytest.raises(KeyError) as caught:
        get_resource_manager("none", None, 1)
    assert isinstance(caught.value, ConfigError)
    assert str(caught.value) == "unknown resource type 'none': use one of cpu, gpu, node, aws, passive, ray"


def test_a_subclass_of_the_cpu_manager_runs_jobs_its_way(workdir, store):
    """As Auptimizer users do: subclass a manager, override `run`, call the parent's."""
    seen: list[tuple[int, int]] = []

    class Recording(CPUResourceManager):
        def __init__(self, connector, n_parallel, tag="x", **kwargs):
            super().__init__(connector, n_parallel, **kwargs)
            self.tag = tag

        def run(self, job, rid, exp_config, call_back_func, **kwargs):
            seen.append((job.jid, rid))
            super().run(job, rid, exp_config, call_back_func, env={"TAG": self.tag})

    write_script(workdir, "tag.sh", 'echo "tag=$TAG"; echo "#Auptimizer:2"')
    rm = Recording(store, 1, tag="mine", eid=_eid(store, workdir))
    job = Job("tag.sh", {}, str(workdir))
    done = threading.Event()
    rid = rm.get_available("me", "cpu")
    rm.run_job(job, rid, {}, lambda score, jid: done.set())
    assert done.wait(15)
    assert rm.finish() == [job.jid, 2.0]
    assert seen == [(job.jid, rid)]
    assert "tag=mine" in Path(job.log_path()).read_text()


# -- Job ------------------------------------------------------------------------------------------


def test_a_relative_job_path_is_the_folder_it_named_when_made(workdir, store, monkeypatch):
    monkeypatch.chdir(workdir.parent)
    job = Job("job.sh", {"x": 0.25}, f"./{workdir.name}")  # relative, as Auptimizer's tests write it
    assert job.path == str(workdir)
    monkeypatch.chdir(workdir / ".aup")  # the caller moves on: the job still runs in its folder
    rm = CPUResourceManager(store, 1, eid=_eid(store, workdir))
    got: list = []
    done = threading.Event()
    rm.run_job(
        job, rm.get_available("me", "cpu"), {}, lambda score, jid: (got.append((score, jid)), done.set())
    )
    assert done.wait(15)
    assert got == [(0.25, job.jid)]
    assert (workdir / "jobs" / f"{job.jid}.json").exists()
    rm.finish()


def test_verify_local_is_true_or_the_environment_error_auptimizer_raises(workdir):
    assert Job("job.sh", {}, str(workdir)).verify_local() is True
    with pytest.raises(EnvironmentError) as caught:
        Job("missing.sh", {}, str(workdir)).verify_local()
    assert isinstance(caught.value, JobError)
    assert str(caught.value).startswith(f"job script {workdir / 'missing.sh'} not found")
    with pytest.raises(OSError):
        Job("job.sh", {}, str(workdir / "nope")).verify_local()


# -- run, run_job and the callback ---------------------------------------------------------------


def test_run_called_directly_on_a_failing_script_calls_back(workdir, store):
    """Auptimizer's test_fail_run / test_run: `run` with a job made without a jid, then
    `executor.shutdown(wait=True)`."""
    write_script(workdir, "fail.sh", 'echo "no score"; exit 3')
    rm = CPUResourceManager(store, 1, eid=1)
    got: list = []
    job = Job("fail.sh", {}, str(workdir))
    rm.run(job, rm.get_available("test", "cpu"), {}, lambda *args: got.append(args))
    rm.executor.shutdown(wait=True)
    assert got == [(None, job.jid)] and job.jid is not None
    assert job.error.startswith("fail.sh exited with status 3 (last output: 'no score')")
    store.flush()  # nothing queued that the store cannot write (the flusher would raise each round)

    missing = Job("missing.sh", {}, str(workdir))
    rm.run(missing, rm.get_available("test", "cpu"), {}, lambda *args: got.append(args))
    assert got[-1] == (None, missing.jid) and "not found" in missing.error

    ok = Job("job.sh", {"x": 3}, str(workdir))
    rm.run(ok, rm.get_available("test", "cpu"), {}, lambda *args: got.append(args))
    assert got[-1] == (3.0, ok.jid)
    rm.finish()


def test_gpu_run_called_directly_runs_on_its_card(tmp_path, store):
    """Auptimizer's GPU test: `run` with a relative job path, callback called."""
    init_aup(str(tmp_path / ".aup"), gpu=["3"], overwrite=True)
    write_script(tmp_path, "card.sh", 'echo "card=$CUDA_VISIBLE_DEVICES"; echo "#Auptimizer:1"')
    connector = TinyDBConnector(str(tmp_path / ".aup"))
    try:
        rm = GPUResourceManager(connector, 1, auppath=str(tmp_path / ".aup"))
        got: list = []
        cwd = os.getcwd()
        os.chdir(tmp_path)
        try:
            job = Job("card.sh", {}, ".")
        finally:
            os.chdir(cwd)
        rm.run(job, rm.get_available("test", "gpu"), {}, lambda *args: got.append(args))
        assert got == [(1.0, job.jid)]
        assert "card=3" in Path(job.log_path()).read_text()
    finally:
        connector.close()


def test_run_job_calls_back_once_the_job_is_recorded_and_its_resource_free(workdir, store):
    eid = _eid(store, workdir)
    rm = CPUResourceManager(store, 1, eid=eid)
    job = Job("job.sh", {"x": 0.5}, str(workdir))
    rid = rm.get_available("me", "cpu")
    seen: dict = {}
    done = threading.Event()

    def callback(score, jid):
        seen.update(
            score=score,
            jid=jid,
            free=rid in store.get_available_resource("cpu"),
            record=store.get_job(jid, eid),
        )
        done.set()

    rm.run_job(job, rid, {}, callback)
    assert done.wait(15)
    assert seen["score"] == 0.5 and seen["jid"] == job.jid and seen["free"]
    assert seen["record"]["status"] == "FINISHED" and seen["record"]["score"] == 0.5
    rm.finish()


def test_callbacks_run_one_at_a_time(workdir, store):
    """Two jobs ending together: the second callback waits for the first (as Auptimizer runs
    them under a lock), so a callback that starts the next job is never raced by another."""
    write_script(workdir, "gate.sh", GATED.format(score=1))
    rm = CPUResourceManager(store, 2, eid=_eid(store, workdir))
    inside, most, lock = [0], [0], threading.Lock()
    other_entered = threading.Event()
    done = threading.Semaphore(0)

    def callback(score, jid):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            if inside[0] > 1:
                other_entered.set()
        other_entered.wait(1.0)  # serialised: the other one cannot come in meanwhile
        with lock:
            inside[0] -= 1
        done.release()

    jobs = [Job("gate.sh", {}, str(workdir)) for _ in range(2)]
    for job in jobs:
        rm.run_job(job, rm.get_available("me", "cpu"), {}, callback)
    for job in jobs:
        assert _wait_for(Path(job.config_path + ".started"))
    for job in jobs:
        Path(job.config_path + ".go").touch()
    assert done.acquire(timeout=15) and done.acquire(timeout=15)
    assert most[0] == 1
    rm.finish()


def test_callbacks_that_start_the_next_job_never_find_its_resource_taken(workdir, store):
    """Auptimizer's loop: each callback picks a free resource and starts the next job on it.
    With 2 resources and 2 chains of jobs, no `run_job` may find its resource taken."""
    rm = CPUResourceManager(store, 2, eid=_eid(store, workdir))
    total, errors, started = 120, [], [0]
    lock, all_done = threading.Lock(), threading.Event()
    ended = [0]

    def submit():
        with lock:
            if started[0] >= total:
                return
            started[0] += 1
        rid = rm.get_available("me", "cpu")
        try:
            rm.run_job(Job("job.sh", {"x": 1}, str(workdir)), rid, {}, callback)
        except RuntimeError as exc:
            errors.append(str(exc))
            all_done.set()

    def callback(score, jid):
        rm.finish_job(jid, score, "FINISHED")  # Auptimizer's loop records it too: no double free
        with lock:
            ended[0] += 1
            if ended[0] == total:
                all_done.set()
        submit()

    submit()
    submit()
    assert all_done.wait(120)
    assert errors == []
    rm.finish()


def test_finish_waits_for_running_jobs(workdir, store):
    write_script(workdir, "gate.sh", GATED.format(score=0.75))
    rm = CPUResourceManager(store, 1, eid=_eid(store, workdir))
    job = Job("gate.sh", {}, str(workdir))
    rm.run_job(job, rm.get_available("me", "cpu"), {}, lambda score, jid: None)
    assert _wait_for(Path(job.config_path + ".started"))
    result: list = []
    finisher = threading.Thread(target=lambda: result.append(rm.finish()))
    finisher.start()
    finisher.join(0.5)
    assert finisher.is_alive()  # waiting for the job, not killing it
    Path(job.config_path + ".go").touch()
    finisher.join(15)
    assert result == [[job.jid, 0.75]]
    assert store.get_job(job.jid)["status"] == "FINISHED"


def test_a_second_finish_job_for_the_same_attempt_changes_nothing(workdir, store):
    eid = _eid(store, workdir)
    rm = CPUResourceManager(store, 1, eid=eid)
    job = Job("job.sh", {"x": 0.5}, str(workdir))
    done = threading.Event()
    rm.run_job(
        job,
        rm.get_available("me", "cpu"),
        {},
        lambda score, jid: (rm.finish_job(jid, None, "FAILED"), done.set()),
    )
    assert done.wait(15)
    record = store.get_job(job.jid, eid)
    assert (record["status"], record["score"]) == ("FINISHED", 0.5)
    rm.finish()


# -- Auptimizer's keyword arguments ---------------------------------------------------------------


def test_an_unknown_keyword_is_refused_naming_it(store):
    with pytest.raises(UnknownArgumentError) as caught:
        CPUResourceManager(store, 1, early_stopp={"aup_policy": "median"})
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ConfigError)
    assert str(caught.value).startswith(
        "CPUResourceManager got the unknown argument 'early_stopp': remove it"
    )
    # what Auptimizer's Experiment and ours pass, and other managers' resource_args, are known
    CPUResourceManager(
        store,
        1,
        eid=1,
        bus=EventBus(),
        maximize=False,
        script="job.sh",
        workingdir=".",
        runtime_args={},
        save_model=False,
        one_shot=False,
        track_intermediate_results=True,
        multi_res_labels=["a"],
        async_run=False,
        max_retries=1,
        auppath=".aup",
    )


def test_the_early_stop_keyword_stops_a_worse_job(workdir, store):
    write_script(workdir, "good.sh", 'for i in 1 2 3 4; do echo "#Auptimizer:10"; done')
    write_script(
        workdir,
        "bad.sh",
        """
        for i in 1 2 3 4; do echo "#Auptimizer:1"; done
        i=0; while [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done
        echo "#Auptimizer:1"
    """,
    )
    eid = _eid(store, workdir)
    rm = CPUResourceManager(
        store,
        1,
        eid=eid,
        track_intermediate_results=True,
        early_stop={"aup_policy": "median", "aup_policy_steps": 2},
    )
    assert rm.early_stop is not None
    for script in ("good.sh", "bad.sh"):
        job = Job(script, {}, str(workdir))
        done = threading.Event()
        rm.run_job(job, rm.get_available("me", "cpu"), {}, lambda score, jid: done.set())
        assert done.wait(15), f"{script} was not stopped early"
    good_jid, bad_jid = job.jid - 1, job.jid
    assert store.get_job(bad_jid, eid)["status"] == "EARLY_STOPPED"
    assert rm.interm_job_res[good_jid] == [10.0] * 4
    assert rm.interm_job_res[bad_jid][:2] == [1.0, 1.0]
    assert rm.finish() == [good_jid, 10.0]


def test_track_intermediate_results_keeps_each_jobs_scores(workdir, store):
    write_script(workdir, "steps.sh", 'for i in 6 7 8; do echo "#Auptimizer:$i"; done')
    rm = CPUResourceManager(store, 1, eid=_eid(store, workdir), track_intermediate_results=True)
    assert rm.early_stop is None
    job = Job("steps.sh", {}, str(workdir))
    done = threading.Event()
    rm.run_job(job, rm.get_available("me", "cpu"), {}, lambda score, jid: done.set())
    assert done.wait(15)
    assert rm.interm_job_res == {job.jid: [6.0, 7.0, 8.0]}
    rm.finish()


def test_multi_res_labels_are_recorded_with_the_experiment(workdir, store):
    write_script(workdir, "multi.sh", 'echo "#Auptimizer:6,7,8"')
    eid = _eid(store, workdir)
    rm = CPUResourceManager(store, 1, eid=eid, multi_res_labels=["x", "y"])
    job = Job("multi.sh", {}, str(workdir))
    got: list = []
    done = threading.Event()
    rm.run_job(job, rm.get_available("me", "cpu"), {}, lambda *args: (got.append(args), done.set()))
    assert done.wait(15)
    assert got == [(6.0, job.jid)]
    assert store.get_labels(eid) == ["x", "y"]
    assert store.get_job(job.jid, eid)["values"] == [6.0, 7.0, 8.0]
    rm.finish()


# -- save_model -----------------------------------------------------------------------------------

SAVER = """
    import json, os, sys
    cfg = json.load(open(sys.argv[1]))
    print("#Auptimizer:%s" % cfg["x"])
    if cfg.get("save_model") is True:  # what Auptimizer's aup_save_model does
        os.makedirs(os.path.join("aup_models", cfg["folder_name"], str(cfg["x"])))
"""


def test_save_model_reruns_the_best_job_to_save_its_models(workdir, store):
    """Auptimizer's CPUResourceManagerSaveModelTestCase: four jobs, then `finish()`."""
    write_script(workdir, "saver.py", SAVER, shebang="#!/usr/bin/env python3")
    eid = _eid(store, workdir)
    bus = EventBus()
    notices: list[Notice] = []
    bus.subscribe(lambda e: notices.append(e) if isinstance(e, Notice) else None)
    rm = CPUResourceManager(
        store, 4, eid=eid, maximize=True, save_model=True, script="saver.py", workingdir=str(workdir), bus=bus
    )
    done = threading.Semaphore(0)
    jids = []
    for x in (5, 15, 2, 1):
        job = Job("saver.py", {"x": x}, str(workdir))
        rm.run_job(job, rm.get_available("test", "cpu"), {}, lambda score, jid: done.release())
        jids.append(job.jid)
        assert done.acquire(timeout=15)  # two CPU slots here: one job at a time
    assert rm.finish() == [jids[1], 15.0]
    models = workdir / "aup_models" / f"models_{eid}"
    assert sorted(os.listdir(models)) == ["15"]  # only the best job saved, once, where Auptimizer puts it
    best_config = json.loads((workdir / "jobs" / f"best_job_{eid}.json").read_text())
    assert best_config["save_model"] is True and best_config["folder_name"] == f"models_{eid}"
    assert best_config["x"] == 15
    assert "#Auptimizer:15" in (workdir / "jobs" / f"best_job_{eid}.out").read_text()
    assert store.get_job(jids[1], eid)["status"] == "FINISHED"  # the record of the best job is unchanged
    assert any(n.message == f"the best job {jids[1]} saved its models in {models}" for n in notices)


def test_an_experiment_with_save_model_leaves_the_best_models(workdir):
    write_script(workdir, "saver.py", SAVER, shebang="#!/usr/bin/env python3")
    exp = Experiment(
        {
            "name": "save",
            "script": "./saver.py",
            "workingdir": str(workdir),
            "resource": "cpu",
            "n_parallel": 2,
            "n_samples": 4,
            "target": "min",
            "proposer": "sequence",
            "parameter_config": [{"name": "x", "range": [1, 4], "type": "int", "n": 4}],
            "resource_args": {"save_model": True},
        },
        auppath=str(workdir / ".aup"),
    )
    result = exp.run()
    assert result.status == "FINISHED" and result.counts == {"FINISHED": 4}
    best_x = result.best_config["x"]
    assert best_x == 1
    assert os.listdir(workdir / "aup_models" / f"models_{result.eid}") == [str(best_x)]


def test_a_stopped_experiment_does_not_rerun_its_best_job(workdir, store):
    write_script(workdir, "saver.py", SAVER, shebang="#!/usr/bin/env python3")
    eid = _eid(store, workdir)
    rm = CPUResourceManager(store, 1, eid=eid, save_model=True, script="saver.py", workingdir=str(workdir))
    done = threading.Event()
    rm.run_job(
        Job("saver.py", {"x": 3}, str(workdir)),
        rm.get_available("me", "cpu"),
        {},
        lambda score, jid: done.set(),
    )
    assert done.wait(15)
    assert rm.finish(status="STOPPED") is not None
    assert not (workdir / "aup_models").exists()


# -- Experiment takes a dict ---------------------------------------------------------------------


def test_experiment_takes_the_experiments_dict_checked_as_a_file(workdir):
    data = json.loads(write_experiment(workdir, n_samples=2).read_text())
    result = Experiment(data, auppath=str(workdir / ".aup")).run()
    assert result.status == "FINISHED" and result.counts == {"FINISHED": 2}
    with pytest.raises(ConfigError) as caught:
        Experiment({**data, "target": "best"}, auppath=str(workdir / ".aup"))
    assert str(caught.value) == 'target "best" in the experiment config must be "min" or "max"'


def test_proposers_take_the_experiments_dict_checked_as_a_file(workdir):
    from aup_tui_backends.proposers import RandomProposer, SpearmintProposer, get_proposer

    data = json.loads(write_experiment(workdir, n_samples=2).read_text())
    assert 0 <= RandomProposer(data).get()["x"] <= 1  # as Auptimizer's proposers are built
    assert get_proposer(data).n_samples == 2
    assert SpearmintProposer({**data, "proposer": "spearmint"}).n_samples == 2
    with pytest.raises(ConfigError) as caught:
        RandomProposer({**data, "n_samples": -1})
    assert (
        str(caught.value) == "n_samples in the experiment config must be a whole number of at least 1, got -1"
    )


def test_jobs_still_run_after_the_caller_shut_the_executor_down(workdir, store):
    """Auptimizer's tests call `rm.executor.shutdown(wait=True)` to wait for jobs, then go on."""
    rm = CPUResourceManager(store, 1, eid=_eid(store, workdir))
    scores: list = []
    for x in (1, 2):
        rm.run_job(
            Job("job.sh", {"x": x}, str(workdir)),
            rm.get_available("me", "cpu"),
            {},
            lambda score, jid: scores.append(score),
        )
        rm.executor.shutdown(wait=True)
    assert scores == [1.0, 2.0]
    assert rm.finish()[1] == 2.0


def test_a_manager_without_an_experiment_records_its_jobs_in_one_it_registers(workdir, store):
    """Auptimizer's managers run without an experiment: their jobs go to one the manager
    registers on its first job (shown by `aup-tui status`, ended by `finish`), never to `eNone`."""
    rm = CPUResourceManager(store, 1)
    done = threading.Event()
    job = Job("job.sh", {"x": 0.25}, str(workdir))
    rm.run_job(job, rm.get_available("me", "cpu"), {}, lambda score, jid: done.set())
    assert done.wait(15)
    assert rm.finish() == [job.jid, 0.25]
    store.flush()
    assert not os.path.exists(os.path.join(store.root, "eNone"))
    assert rm.eid is not None and job.eid == rm.eid
    assert store.get_job(job.jid, rm.eid)["status"] == "FINISHED"
    exp = store.get_experiment(rm.eid)
    assert (exp["name"], exp["status"], exp["best_jid"], exp["best_score"]) == (
        "cpu jobs",
        "FINISHED",
        job.jid,
        0.25,
    )
