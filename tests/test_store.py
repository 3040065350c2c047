"""The TinyDB store: threads, two processes, kill -9, recovery, and cost that does not grow."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from aup_tui_backends.store import TinyDBConnector
from aup_tui_backends.store.connector import JOBS_PER_SHARD, RESULTS_PER_PART
from helpers import ROOT
from tinydb import TinyDB


def _finish_jobs(c: TinyDBConnector, eid: int, n: int, score0: float = 0.0) -> list[int]:
    jids = []
    for i in range(n):
        jid = c.new_jid()
        c.start_job(eid, jid, {"i": i}, None, "cpu:0", 1)
        c.end_job(eid, jid, score0 + i, "FINISHED", values=[score0 + i])
        jids.append(jid)
    return jids


def test_jobs_results_and_best_survive_reopening(tmp_path):
    c = TinyDBConnector(str(tmp_path / ".aup"))
    eid = c.start_experiment("me", "exp", {"name": "exp"}, target="min")
    jids = _finish_jobs(c, eid, JOBS_PER_SHARD + 5)  # spans two job files
    for i in range(3):
        c.save_intermediate_result(eid, jids[0], i, [float(i), 2.0 * i])
    c.save_labels(eid, ["acc", "loss"])
    c.close()

    again = TinyDBConnector(str(tmp_path / ".aup"))
    assert [j["jid"] for j in again.jobs(eid)] == jids
    assert again.get_best_result(eid, maximize=False) == (jids[0], 0.0)
    assert again.get_best_result(eid, maximize=True) == (jids[-1], float(len(jids) - 1))
    assert [r["values"] for r in again.intermediate_results(eid, jids[0])] == [
        [0.0, 0.0],
        [1.0, 2.0],
        [2.0, 4.0],
    ]
    assert again.get_labels(eid) == ["acc", "loss"]


def test_closed_store_is_plain_tinydb(tmp_path):
    """After close, journals are folded in: stock TinyDB reads the files."""
    c = TinyDBConnector(str(tmp_path / ".aup"))
    eid = c.start_experiment("me", "exp", {})
    _finish_jobs(c, eid, 3)
    c.close()
    db = TinyDB(str(tmp_path / ".aup" / "store" / f"e{eid}" / "jobs-0.json"))
    assert sorted(d["status"] for d in db.table("jobs").all()) == ["FINISHED"] * 3


def test_threads_of_one_process_lose_no_write(tmp_path):
    c = TinyDBConnector(str(tmp_path / ".aup"))
    eid = c.start_experiment("me", "exp", {})
    out: list[int] = []

    def worker() -> None:
        out.extend(_finish_jobs(c, eid, 50))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 200
    assert {j["jid"] for j in c.jobs(eid) if j["status"] == "FINISHED"} == set(out)


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from aup_tui_backends.store import TinyDBConnector
    c = TinyDBConnector(sys.argv[2])
    eid = int(sys.argv[3])
    for i in range(int(sys.argv[4])):
        jid = c.new_jid()
        c.start_job(eid, jid, {"i": i}, None, "cpu:0", 1)
        c.end_job(eid, jid, float(i), "FINISHED", values=[float(i)])
        print(jid, flush=True)
""")


def test_two_processes_write_and_see_each_other(tmp_path):
    aup = str(tmp_path / ".aup")
    c = TinyDBConnector(aup)
    eid = c.start_experiment("me", "exp", {})
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    child = subprocess.Popen(
        [sys.executable, str(script), str(ROOT), aup, str(eid), "150"], stdout=subprocess.PIPE, text=True
    )
    mine = _finish_jobs(c, eid, 150)
    theirs = [int(line) for line in child.communicate(timeout=60)[0].split()]
    assert child.returncode == 0
    assert not set(mine) & set(theirs), "the two processes handed out the same job id"
    # this reader sees the other process's writes without reopening
    assert {j["jid"] for j in c.jobs(eid)} == set(mine) | set(theirs)


def test_kill_9_mid_write_keeps_every_finished_job(tmp_path):
    aup = str(tmp_path / ".aup")
    c = TinyDBConnector(aup)
    eid = c.start_experiment("me", "exp", {})
    c.close()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    child = subprocess.Popen(
        [sys.executable, str(script), str(ROOT), aup, str(eid), "100000"], stdout=subprocess.PIPE, text=True
    )
    reported: list[int] = []
    assert child.stdout is not None
    while len(reported) < 300:  # let it get well into compactions
        reported.append(int(child.stdout.readline()))
    child.send_signal(signal.SIGKILL)
    rest = child.communicate()[0]
    reported.extend(int(x) for x in rest.split())

    again = TinyDBConnector(aup)
    finished = {j["jid"] for j in again.jobs(eid) if j["status"] == "FINISHED"}
    assert set(reported) <= finished  # every end_job that returned is on disk
    for path in (tmp_path / ".aup" / "store").rglob("*.json"):
        json.loads(path.read_text() or "{}")  # no snapshot is ever half-written


def test_torn_journal_tail_is_ignored_then_cut(tmp_path):
    aup = str(tmp_path / ".aup")
    c = TinyDBConnector(aup)
    eid = c.start_experiment("me", "exp", {})
    [jid] = _finish_jobs(c, eid, 1)
    log = tmp_path / ".aup" / "store" / f"e{eid}" / f"jobs-{jid // JOBS_PER_SHARD}.json.log"
    with open(log, "ab") as f:
        f.write(b'{"t":"jobs","id":"999","d":{"jid"')  # a crash in the middle of an append
    other = TinyDBConnector(aup)
    assert [j["jid"] for j in other.jobs(eid)] == [jid]
    [jid2] = _finish_jobs(other, eid, 1)  # the next writer drops the torn line
    assert [j["jid"] for j in TinyDBConnector(aup).jobs(eid)] == [jid, jid2]


def test_recover_frees_resources_and_marks_jobs_of_a_dead_process(tmp_path):
    aup = str(tmp_path / ".aup")
    script = tmp_path / "crasher.py"
    script.write_text(
        textwrap.dedent("""
        import os, sys
        sys.path.insert(0, sys.argv[1])
        from aup_tui_backends.store import TinyDBConnector
        c = TinyDBConnector(sys.argv[2])
        rid = c.add_resource("cpu0", "cpu")
        eid = c.start_experiment("me", "exp", {})
        jid = c.new_jid()
        assert c.take_available_resource(rid, jid)
        c.start_job(eid, jid, {}, rid, "cpu:cpu0", 1)
        c.flush()
        os.kill(os.getpid(), 9)
    """)
    )
    subprocess.run([sys.executable, str(script), str(ROOT), aup])
    c = TinyDBConnector(aup)
    assert c.resources()[0]["status"] == "taken"
    report = c.recover()
    assert report["resources"] == [1] and report["experiments"] == [1] and len(report["jobs"]) == 1
    assert c.resources()[0]["status"] == "free"
    assert c.get_experiment(1)["status"] == "INTERRUPTED"
    job = c.jobs(1)[0]
    assert job["status"] == "INTERRUPTED" and "died" in job["error"]


def test_recover_leaves_a_live_process_alone(tmp_path):
    c = TinyDBConnector(str(tmp_path / ".aup"))
    rid = c.add_resource("cpu0", "cpu")
    eid = c.start_experiment("me", "exp", {})
    assert c.take_available_resource(rid, 1)
    assert c.recover() == {"resources": [], "experiments": [], "jobs": []}
    assert c.get_experiment(eid)["status"] == "RUNNING"


def test_a_resource_is_taken_by_one_process_only(tmp_path):
    aup = str(tmp_path / ".aup")
    c = TinyDBConnector(aup)
    rid = c.add_resource("cpu0", "cpu")
    assert c.take_available_resource(rid, 1)
    other = TinyDBConnector(aup)
    assert other.get_available_resource("cpu") == []
    assert not other.take_available_resource(rid, 2)
    c.free_used_resource(rid)
    c.flush()
    c._write_released()
    assert other.take_available_resource(rid, 3)


def test_intermediate_results_roll_into_bounded_files(tmp_path):
    c = TinyDBConnector(str(tmp_path / ".aup"))
    eid = c.start_experiment("me", "exp", {})
    n = RESULTS_PER_PART * 2 + 10
    for i in range(n):
        c.save_intermediate_result(eid, 1, i, [float(i)])
    c.flush()
    files = sorted((tmp_path / ".aup" / "store" / f"e{eid}").glob("results-0-*.json*"))
    assert len({f.name.split(".")[0] for f in files}) == 3
    results = c.intermediate_results(eid, 1)
    assert [r["index"] for r in results] == list(range(n))


def test_stop_requests_cross_processes(tmp_path):
    aup = str(tmp_path / ".aup")
    runner = TinyDBConnector(aup)
    eid = runner.start_experiment("me", "exp", {})
    TinyDBConnector(aup).request_stop(eid, 7)
    assert runner.is_job_stopped(7, eid)
    assert not runner.is_job_stopped(8, eid)
    TinyDBConnector(aup).request_stop(eid)
    assert runner.is_job_stopped(8, eid)
    runner.end_experiment(eid, "STOPPED")
    assert runner.stop_requests(eid) == []


def test_a_running_jobs_latest_result_is_on_its_record_for_other_processes(tmp_path):
    c = TinyDBConnector(str(tmp_path / ".aup"))
    eid = c.start_experiment("me", "exp", {"name": "exp"}, target="min")
    running, ended = c.new_jid(), c.new_jid()
    for jid in (running, ended):
        c.start_job(eid, jid, {}, 1, "cpu:0", 1)
        for i, v in enumerate([3.0, 2.0, 1.5]):
            c.save_intermediate_result(eid, jid, i, [v, 10 * v])
    c.end_job(eid, ended, 1.5, "FINISHED", values=[1.5, 15.0])
    c.flush()
    reader = TinyDBConnector(str(tmp_path / ".aup"))
    assert (
        reader.get_job(running, eid)["values"] == [1.5, 15.0]
        and reader.get_job(running, eid)["score"] is None
    )
    assert reader.get_job(ended, eid)["status"] == "FINISHED"  # its final record is left as it is
    c.start_job(eid, running, {}, 2, "cpu:1", 2)  # a retry starts with no result of its own
    assert reader.get_job(running, eid)["values"] is None
    c.close()
    reader.close()


def test_a_running_attempts_pid_reaches_other_processes_and_no_other_attempt(tmp_path):
    """`aup-tui watch` matches GPU processes to jobs by the pid the running process recorded."""
    c = TinyDBConnector(str(tmp_path / ".aup"))
    eid = c.start_experiment("me", "exp", {"name": "exp"}, target="min")
    running, short, retried = c.new_jid(), c.new_jid(), c.new_jid()
    for jid in (running, short, retried):
        c.start_job(eid, jid, {}, 1, "gpu:0", 1)
        c.set_job_pid(eid, jid, 1, 1000 + jid)
    c.end_job(eid, short, 1.0, "FINISHED")  # over before the flush: not worth a write
    c.end_job(eid, retried, None, "FAILED", final=False)
    c.start_job(eid, retried, {}, 1, "gpu:0", 2)  # attempt 2 runs; attempt 1's pid is stale
    c.flush()

    reader = TinyDBConnector(str(tmp_path / ".aup"))  # what another process reads
    assert reader.get_job(running, eid)["pid"] == 1000 + running
    assert "pid" not in reader.get_job(short, eid)
    assert "pid" not in reader.get_job(retried, eid)
    c.set_job_pid(eid, retried, 2, 2000)
    c.flush()
    assert reader.get_job(retried, eid)["pid"] == 2000
    c.end_job(eid, running, 0.5, "FINISHED")
    assert "pid" not in reader.get_job(running, eid)  # its process is gone
    c.close()
    reader.close()


def test_best_job_on_a_tie_is_the_one_that_finished_first(tmp_path):
    """Equal scores: the job that FINISHED first wins (not the lower jid), for max and for min."""
    from aup_tui_backends.store import better

    c = TinyDBConnector(str(tmp_path / ".aup"))
    eid = c.start_experiment("me", "exp", {})
    first, second = c.new_jid(), c.new_jid()
    for jid in (first, second):
        c.start_job(eid, jid, {}, None, "cpu:0", 1)
    c.end_job(eid, second, 0.5, "FINISHED", values=[0.5])  # the later job ends first
    c.end_job(eid, first, 0.5, "FINISHED", values=[0.5])
    assert c.get_best_result(eid, maximize=True) == (second, 0.5)
    assert c.get_best_result(eid, maximize=False) == (second, 0.5)
    assert better(0.6, 9.0, 7, (0.5, 1.0, 3), maximize=True) and not better(0.6, 9.0, 7, (0.5, 1.0, 3), False)
    c.close()


def test_status_columns_come_from_a_summary_only_while_it_matches_the_job_files(tmp_path):
    """After close, `job_rows` (what `status` shows) reads e<eid>/summary.json; a job changed
    since, or a damaged summary, and it reads the job files instead — never stale rows."""
    auppath = str(tmp_path / ".aup")
    c = TinyDBConnector(auppath)
    eid = c.start_experiment("me", "exp", {})
    jids = _finish_jobs(c, eid, JOBS_PER_SHARD + 3)
    c.close()
    summary = tmp_path / ".aup" / "store" / f"e{eid}" / "summary.json"
    assert summary.exists()

    def rows(conn, docs=None):
        keys = ("jid", "status", "score", "config", "resource", "end")
        return [tuple(r[k] for k in keys) for r in (docs if docs is not None else conn.job_rows(eid))]

    c = TinyDBConnector(auppath)
    assert rows(c) == rows(c, c.jobs(eid))
    c.update_job(eid, jids[0], status="FAILED")  # another write, journal not folded yet
    other = TinyDBConnector(auppath)
    assert rows(other)[0][1] == "FAILED"
    other.close()
    c.close()
    body = bytearray(summary.read_bytes())
    body[-5] ^= 0x01  # a flipped bit in the rows: the checksum catches it
    summary.write_bytes(bytes(body))
    c = TinyDBConnector(auppath)
    assert rows(c)[0][1] == "FAILED" and rows(c) == rows(c, c.jobs(eid))
    c.close()


def test_end_job_returns_the_end_time_it_recorded(tmp_path):
    """The engine puts this time on JobFinished, so a live view breaks ties as the store does."""
    c = TinyDBConnector(str(tmp_path / ".aup"))
    eid = c.start_experiment("me", "exp", {})
    jid = c.new_jid()
    c.start_job(eid, jid, {}, None, "cpu:0", 1)
    end = c.end_job(eid, jid, 1.0, "FINISHED", values=[1.0])
    assert isinstance(end, float) and c.get_job(jid, eid)["end"] == end
    assert c.end_job(eid, 999, 1.0, "FINISHED") is None
    c.close()


def test_a_finished_job_is_journaled_as_its_change_not_its_whole_record(tmp_path):
    """end_job appends the fields it sets (a job's config can be large); another process reads the
    whole record from the journal, and once folded stock TinyDB reads it too."""
    c = TinyDBConnector(str(tmp_path / ".aup"))
    eid = c.start_experiment("me", "exp", {})
    jid = c.new_jid()
    config = {f"p{i}": i * 0.5 for i in range(50)}
    c.start_job(eid, jid, config, None, "cpu:0", 1)
    c.end_job(eid, jid, 0.5, "FINISHED", values=[0.5, 2.0])
    journal = tmp_path / ".aup" / "store" / f"e{eid}" / f"jobs-{jid // JOBS_PER_SHARD}.json.log"
    last = json.loads(journal.read_bytes().splitlines()[-1])
    assert last["u"]["status"] == "FINISHED" and "config" not in last["u"]
    other = TinyDBConnector(str(tmp_path / ".aup"))  # as another process sees it
    record = other.get_job(jid, eid)
    assert record["config"] == config and record["status"] == "FINISHED" and record["values"] == [0.5, 2.0]
    assert record["attempts"][-1]["status"] == "FINISHED" and record["attempts"][-1]["end"] == record["end"]
    other.close()
    c.close()
    db = TinyDB(str(journal).removesuffix(".log"))
    doc = db.table("jobs").get(doc_id=jid)
    db.close()
    assert doc["config"] == config and doc["score"] == 0.5


def test_a_damaged_update_in_a_journal_is_reported_naming_the_file(tmp_path):
    from aup_tui_backends.store import StoreCorruptError
    from aup_tui_backends.store.files import JournaledStorage
    from aup_tui_backends.store.schema import validate_document

    path = str(tmp_path / "jobs-0.json")
    doc = {
        "jid": 1,
        "eid": 1,
        "status": "RUNNING",
        "config": {},
        "attempts": [],
        "score": None,
        "resource": None,
    }
    JournaledStorage(path, validate=validate_document).append([{"t": "jobs", "id": "1", "d": doc}])
    with open(path + ".log", "ab") as f:
        f.write(b'{"t":"jobs","id":"1","u":{"status":7}}\n')
    try:
        JournaledStorage(path, validate=validate_document).read()
    except StoreCorruptError as exc:
        assert exc.path == path + ".log" and "status" in str(exc)
    else:
        raise AssertionError("a damaged update was read as a record")


def test_a_shard_whose_jobs_are_over_is_folded_while_the_run_goes_on(tmp_path):
    """The flusher folds a job file no job of ours writes to any more, so close has little left."""
    import time

    c = TinyDBConnector(str(tmp_path / ".aup"))
    eid = c.start_experiment("me", "exp", {})
    jids = [c.new_jid() for _ in range(JOBS_PER_SHARD + 1)]
    over = [j for j in jids if j // JOBS_PER_SHARD == jids[0] // JOBS_PER_SHARD]
    running = jids[-1]  # in the next shard, still running
    assert running // JOBS_PER_SHARD != over[0] // JOBS_PER_SHARD
    for jid in over:
        c.start_job(eid, jid, {}, None, "cpu:0", 1)
        c.end_job(eid, jid, 1.0, "FINISHED", values=[1.0])
    c.start_job(eid, running, {}, None, "cpu:0", 1)
    store = tmp_path / ".aup" / "store" / f"e{eid}"
    done = store / f"jobs-{over[0] // JOBS_PER_SHARD}.json"
    live = store / f"jobs-{running // JOBS_PER_SHARD}.json.log"
    deadline = time.monotonic() + 10
    while Path(str(done) + ".log").stat().st_size and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Path(str(done) + ".log").stat().st_size == 0, "the finished shard was not folded"
    assert live.stat().st_size > 0, "a shard with a running job was folded"
    db = TinyDB(str(done))
    assert len(db.table("jobs")) == len(over)
    db.close()
    c.end_job(eid, running, 1.0, "FINISHED", values=[1.0])
    c.close()
