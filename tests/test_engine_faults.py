"""The engine when things go wrong: a stop during save_model's re-run, store writes refused half-way,
a flusher hit by an unexpected error, a job end that can't be recorded, durable compaction."""

from __future__ import annotations

import errno
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from aup_tui_backends.config import load_experiment
from aup_tui_backends.errors import ConfigError
from aup_tui_backends.experiment import Experiment
from aup_tui_backends.jobs import Job
from aup_tui_backends.resources.cpu import CPUResourceManager
from aup_tui_backends.store import TinyDBConnector
from aup_tui_backends.store import connector as connector_module
from aup_tui_backends.store.files import JournaledStorage, StoreWriteError
from helpers import pid_alive, write_experiment, write_script


def _until(predicate, timeout: float = 20.0) -> bool:
    """Poll `predicate` (bounded): True as soon as it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        threading.Event().wait(0.02)
    return bool(predicate())


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _refuse_writes(monkeypatch, match: str) -> None:
    """os.write says ENOSPC for files whose path contains `match` (a disk full for those only)."""
    real = os.write

    def write(fd, data):
        if match in _fd_path(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


def _run_in_thread(exp: Experiment) -> tuple[threading.Thread, list]:
    out: list = []

    def target() -> None:
        try:
            out.append(exp.run())
        except BaseException as exc:  # noqa: BLE001 — the test looks at it
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


# -- 1. save_model's re-run of the best job can be stopped ----------------------------------------

SLOW_SAVER = """
    import json, os, sys, time
    cfg = json.load(open(sys.argv[1]))
    print("#Auptimizer:%s" % cfg["x"], flush=True)
    if cfg.get("save_model") is True:  # the re-run: say who we are, then take (far) too long
        with open("rerun.pid.tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename("rerun.pid.tmp", "rerun.pid")
        time.sleep(300)
"""


def test_stop_during_the_save_model_rerun_kills_it_and_run_returns(workdir):
    write_script(workdir, "saver.py", SLOW_SAVER, shebang="#!/usr/bin/env python3")
    exp = Experiment(
        {
            "name": "save",
            "script": "./saver.py",
            "workingdir": str(workdir),
            "resource": "cpu",
            "n_parallel": 1,
            "n_samples": 2,
            "target": "max",
            "proposer": "sequence",
            "parameter_config": [{"name": "x", "range": [1, 2], "type": "int", "n": 2}],
            "resource_args": {"save_model": True},
        },
        auppath=str(workdir / ".aup"),
    )
    thread, out = _run_in_thread(exp)
    pidfile = workdir / "rerun.pid"
    pid = None
    try:
        assert _until(pidfile.exists, 60), "the best job was never re-run"
        pid = int(pidfile.read_text())
        exp.stop()  # as the TUI's quit-with-stop and a headless Ctrl-C do
        thread.join(20)
        assert not thread.is_alive(), "run() still waits for the re-run after stop()"
        assert _until(lambda: not pid_alive(pid), 10), "the re-run was left running"
        assert not isinstance(out[0], BaseException), out[0]
        assert out[0].status == "FINISHED" and out[0].best_score == 2  # the search itself had finished
    finally:
        if pid is not None and pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        thread.join(15)


# -- 2. a batch of intermediate results refused half-way is not written twice ---------------------


def test_results_written_before_a_failed_write_are_not_written_again(workdir, monkeypatch):
    auppath = str(workdir / ".aup")
    store = TinyDBConnector(auppath)
    shard = connector_module.JOBS_PER_SHARD
    store.save_intermediate_result(1, 1, 0, [0.5])  # shard 0: written first …
    store.save_intermediate_result(1, shard + 1, 0, [0.7])  # … shard 1: refused (disk full)
    _refuse_writes(monkeypatch, "results-1-")
    with pytest.raises(StoreWriteError):
        store.flush()
    monkeypatch.undo()
    store.flush()  # room again: what waited is written, once
    store.close()
    fresh = TinyDBConnector(auppath)
    try:
        assert [r["values"] for r in fresh.intermediate_results(1, 1)] == [[0.5]]
        assert [r["values"] for r in fresh.intermediate_results(1, shard + 1)] == [[0.7]]
    finally:
        fresh.close()


# -- 3. compaction: the snapshot is on disk before the journal is cut -------------------------------


def _record_syncs(monkeypatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    real_fsync, real_truncate = os.fsync, os.ftruncate

    def fsync(fd):
        calls.append(("fsync", _fd_path(fd)))
        return real_fsync(fd)

    def ftruncate(fd, length):
        calls.append(("truncate", _fd_path(fd)))
        return real_truncate(fd, length)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "ftruncate", ftruncate)
    return calls


def _snapshot_synced_before_cut(calls: list[tuple[str, str]], snapshot: str) -> bool:
    cut = next(i for i, (what, path) in enumerate(calls) if what == "truncate" and path == snapshot + ".log")
    # the snapshot is written under a temporary name, fsynced, renamed; then its folder is fsynced
    synced = [i for i, (what, path) in enumerate(calls[:cut]) if what == "fsync" and ".tmp" in path]
    folder = [
        i
        for i, (what, path) in enumerate(calls[:cut])
        if what == "fsync" and path == os.path.dirname(snapshot)
    ]
    return bool(synced) and bool(folder) and synced[0] < folder[0]


def test_background_compaction_fsyncs_the_snapshot_before_cutting_the_journal(tmp_path, monkeypatch):
    path = str(tmp_path / "jobs-0.json")
    storage = JournaledStorage(path)
    storage.append([{"t": "jobs", "id": "1", "d": {"status": "FINISHED"}}])  # an fdatasync'ed record
    calls = _record_syncs(monkeypatch)
    storage.compact()  # what the flusher's _compact_idle and close() call
    assert _snapshot_synced_before_cut(calls, path), calls
    monkeypatch.undo()
    assert JournaledStorage(path).read() == {"jobs": {"1": {"status": "FINISHED"}}}


def test_close_compacts_durably(workdir, monkeypatch):
    store = TinyDBConnector(str(workdir / ".aup"))
    eid = store.start_experiment(
        "me", "x", {}, n_samples=1, target="max", resource="cpu", workingdir=str(workdir), script="./job.sh"
    )
    calls = _record_syncs(monkeypatch)
    store.close()
    monkeypatch.undo()
    snapshot = os.path.join(store.root, f"e{eid}", "experiment.json")
    assert any(p == snapshot + ".log" for w, p in calls if w == "truncate"), calls
    assert _snapshot_synced_before_cut(calls, snapshot), calls


# -- 4. the flusher: started by any failed write, never killed by an unexpected error --------------


def _store_with_resource(workdir: Path) -> int:
    """A store with its resources on disk (written and closed by another connector)."""
    setup = TinyDBConnector(str(workdir / ".aup"))
    try:
        return setup.get_available_resource("cpu")[0]
    finally:
        setup.close()


def test_a_failed_take_as_the_first_write_is_retried(workdir, monkeypatch):
    rid = _store_with_resource(workdir)
    store = TinyDBConnector(str(workdir / ".aup"))
    try:
        _refuse_writes(monkeypatch, str(workdir / ".aup" / "store"))
        with pytest.raises(StoreWriteError):
            store.take_available_resource(rid, 1)
        monkeypatch.undo()  # room again
        assert _until(lambda: store.write_error is None, 10), "nothing retried: the run would wait forever"
        assert store.take_available_resource(rid, 1)
    finally:
        store.close()


def test_the_flusher_survives_an_unexpected_error_while_retrying(workdir, monkeypatch):
    rid = _store_with_resource(workdir)
    store = TinyDBConnector(str(workdir / ".aup"))
    try:
        _refuse_writes(monkeypatch, str(workdir / ".aup" / "store"))
        with pytest.raises(StoreWriteError):
            store.take_available_resource(rid, 1)
        monkeypatch.undo()
        real_open = os.open
        refused = threading.Event()

        def no_probe(path, *args, **kwargs):  # the store became unwritable for another reason
            if ".probe-" in str(path):
                refused.set()
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", no_probe)
        assert refused.wait(10)
        assert _until(lambda: store.flush_failure is not None, 10)
        monkeypatch.undo()  # fixed: the flusher is still there to notice
        assert _until(lambda: store.write_error is None, 10), "the flusher died"
        assert store.flush_failure is None
    finally:
        monkeypatch.undo()
        store.close()


# -- 5. attempt numbers after a refused take ---------------------------------------------------------


def test_a_retry_whose_take_is_refused_keeps_its_attempt_number(workdir):
    write_script(
        workdir,
        "flaky.sh",
        f"""
        if [ ! -e "{workdir}/tried.$AUP_JOB_ID" ]; then touch "{workdir}/tried.$AUP_JOB_ID"; exit 1; fi
        echo "#Auptimizer:1"
    """,
    )
    path = write_experiment(
        workdir, script="./flaky.sh", n_samples=1, n_parallel=1, job_failure={"job_retries": 1}
    )
    exp = Experiment(load_experiment(path), auppath=str(workdir / ".aup"))
    store = exp.connector
    real_take = store.take_available_resource
    calls = []

    def take(rid, jid=None):
        calls.append(rid)
        if len(calls) == 2:  # the retry's take: the disk filled up meanwhile
            store.write_error = StoreWriteError(store.root, OSError(errno.ENOSPC, "No space left on device"))
            store._start_flusher()
            raise store.write_error
        return real_take(rid, jid)

    store.take_available_resource = take
    result = exp.run()
    assert result.status == "FINISHED", result
    job = store.job_rows(result.eid)[0]
    record = store.get_job(job["jid"], result.eid)
    assert [a["attempt"] for a in record["attempts"]] == [1, 2]
    assert len(calls) == 3


# -- 6. a job end that can't be recorded frees its resource and fails the run ------------------------


def test_a_job_end_that_cannot_be_recorded_fails_the_run_instead_of_spinning(workdir):
    write_script(
        workdir,
        "gated.sh",
        f"""
        touch "{workdir}/started.$AUP_JOB_ID"
        i=0
        while [ ! -e "{workdir}/gate" ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done
        echo "#Auptimizer:1"
    """,
    )
    path = write_experiment(workdir, script="./gated.sh", n_samples=4, n_parallel=1)
    exp = Experiment(load_experiment(path), auppath=str(workdir / ".aup"))
    thread, out = _run_in_thread(exp)
    try:
        assert _until(lambda: any(workdir.glob("started.*")), 30)
        journals = list((workdir / ".aup" / "store").glob("e*/jobs-*.json.log"))
        assert journals
        with open(journals[0], "ab") as f:  # the job's shard is damaged while it runs
            f.write(b"not json\n")
    finally:
        (workdir / "gate").touch()
    thread.join(30)
    assert not thread.is_alive(), "the run spins re-dispatching with its resources taken"
    exp_record = TinyDBConnector(str(workdir / ".aup")).get_experiment(exp.eid)
    assert exp_record["status"] == "FAILED"
    assert "damaged" in exp_record["reason"] and "jobs-" in exp_record["reason"], exp_record["reason"]
    assert len(exp.connector.get_available_resource("cpu")) == 2  # nothing left taken


# -- 7. close() --------------------------------------------------------------------------------------


def test_close_stops_the_flusher_and_leaves_no_store_fd_open(workdir):
    store = TinyDBConnector(str(workdir / ".aup"))
    shards = connector_module.OPEN_DBS + 8  # more results databases than stay open
    for n in range(shards):
        store.save_intermediate_result(1, n * connector_module.JOBS_PER_SHARD, 0, [float(n)])
    store.flush()
    flusher = store._flusher
    store.close()
    assert flusher is not None and not flusher.is_alive()
    leaked = [
        p for p in (_fd_path(int(fd)) for fd in os.listdir("/proc/self/fd")) if p.startswith(store.root)
    ]
    assert leaked == []


# -- 9. resource_args and finish(maximize) ---------------------------------------------------------


def test_an_unknown_resource_args_key_is_refused_at_load_before_anything_is_recorded(workdir):
    path = write_experiment(workdir, resource_args={"early_stopp": {"aup_policy": "median"}})
    with pytest.raises(ConfigError) as info:
        Experiment(load_experiment(path), auppath=str(workdir / ".aup"))
    assert str(info.value) == (
        f"resource_args.early_stopp in {path} is not an argument any resource manager "
        "takes — remove it (or check the spelling)"
    )
    store = TinyDBConnector(str(workdir / ".aup"))
    try:
        assert store.experiments() == []
    finally:
        store.close()


def test_cpu_finish_honours_maximize(workdir):
    store = TinyDBConnector(str(workdir / ".aup"))
    eid = store.start_experiment(
        "me", "api", {}, n_samples=2, target="max", resource="cpu", workingdir=str(workdir), script="./job.sh"
    )
    rm = CPUResourceManager(store, 1, eid=eid, maximize=True)
    done = threading.Semaphore(0)
    jids = {}
    for x in (3, 7):
        job = Job("job.sh", {"x": x}, str(workdir))
        rm.run_job(job, rm.get_available("me", "cpu"), {}, lambda score, jid: done.release())
        jids[x] = job.jid
        assert done.acquire(timeout=15)
    try:
        assert rm.finish(maximize=False) == [jids[3], 3.0]
        assert rm.finish(maximize=True) == [jids[7], 7.0]
    finally:
        store.close()
    assert json.loads(json.dumps(jids))  # both ran


def test_a_run_waiting_for_the_store_fails_when_the_flusher_cannot_write_it_for_another_reason(
    workdir, monkeypatch
):
    """The store fills up as the job ends (its record waits), then refuses writes with EACCES:
    the run ends, saying why, instead of waiting for ever for a disk that won't take writes."""
    from aup_tui_backends.events import Notice

    path = write_experiment(workdir, n_samples=1, n_parallel=1)
    exp = Experiment(load_experiment(path), auppath=str(workdir / ".aup"))
    said = threading.Event()
    exp.bus.subscribe(
        lambda e: (
            said.set()
            if isinstance(e, Notice) and "store can't be written" in e.message and e.level == "error"
            else None
        )
    )
    real = os.write
    store_root = str(workdir / ".aup" / "store")
    refusal = [errno.ENOSPC]

    def write(fd, data):
        where = _fd_path(fd)
        if where.startswith(store_root) and ("/jobs-" in where or refusal[0] == errno.EACCES):
            raise OSError(refusal[0], os.strerror(refusal[0]))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    thread, out = _run_in_thread(exp)
    try:
        assert _until(lambda: exp.connector.write_error is not None, 30), "the job's end was never refused"
        refusal[0] = errno.EACCES  # …and now the store refuses for a reason that waiting won't fix
        thread.join(30)
        assert not thread.is_alive(), "the run waits for ever for the store"
        assert said.is_set()
    finally:
        monkeypatch.undo()
        thread.join(10)


def test_headless_ctrl_c_during_the_save_model_rerun_ends_it_and_exits(workdir):
    """A real `aup-tui run --headless`: Ctrl-C while the best job is being re-run kills the re-run
    and the process exits (before: it waited for the re-run for ever)."""
    import subprocess

    from helpers import cli_popen

    write_script(workdir, "saver.py", SLOW_SAVER, shebang="#!/usr/bin/env python3")
    write_experiment(
        workdir,
        script="./saver.py",
        n_parallel=1,
        n_samples=2,
        proposer="sequence",
        parameter_config=[{"name": "x", "range": [1, 2], "type": "int", "n": 2}],
        resource_args={"save_model": True},
    )
    proc = cli_popen(
        "run", "--headless", "experiment.json", cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    pid = None
    try:
        assert _until(lambda: (workdir / "rerun.pid").exists() or proc.poll() is not None, 60)
        assert proc.poll() is None, proc.communicate()[1]
        pid = int((workdir / "rerun.pid").read_text())
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert "Traceback" not in err, err
        assert _until(lambda: not pid_alive(pid), 10), "the re-run was left running"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if pid is not None and pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
