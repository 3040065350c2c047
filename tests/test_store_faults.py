"""A store that can't be written (a real, full tmpfs), damaged store files, and the umask.

The disk-full tests mount a small tmpfs on `.aup/store` (root only; skipped with the reason
otherwise), fill it with a filler file while jobs run, and let those jobs finish while it is full.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from aup_tui_backends.store import TinyDBConnector
from aup_tui_backends.store.files import JournaledStorage, StoreWriteError
from helpers import cli, cli_popen, write_experiment, write_script

PAD = "p" * 3000  # a job record bigger than the slack in a journal's last page: the append needs a page


def _mount_tmpfs(store: Path) -> None:
    """Mount a 2 MiB tmpfs on `store`, keeping what is in it."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root and mount(8) to put the store on a small tmpfs")
    keep = store.parent / "store.keep"
    shutil.copytree(store, keep)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(store)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        shutil.rmtree(keep)
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    for item in keep.iterdir():
        shutil.copy2(item, store / item.name) if item.is_file() else shutil.copytree(item, store / item.name)
    shutil.rmtree(keep)


def _fill(folder: Path) -> Path:
    """Write a filler file until the file system says ENOSPC; returns it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def full_store(workdir: Path):
    """A workdir whose `.aup/store` is a 2 MiB tmpfs; jobs wait for `gate`, then print x."""
    store = workdir / ".aup" / "store"
    _mount_tmpfs(store)
    write_script(
        workdir,
        "job.sh",
        f"""
        touch "{workdir}/started.$AUP_JOB_ID"
        i=0
        while [ ! -e "{workdir}/gate" ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done
        x=$(sed 's/.*"x": *\\([-0-9.e]*\\).*/\\1/' "$1")
        echo "#Auptimizer:$x"
    """,
    )
    write_experiment(
        workdir,
        n_samples=6,
        n_parallel=2,
        parameter_config=[
            {"name": "x", "range": [0, 1], "type": "float"},
            {"name": "pad", "range": [PAD], "type": "choice"},
        ],
    )
    yield workdir
    subprocess.run(["umount", "-l", str(store)], capture_output=True, check=False)


def _wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _started(workdir: Path) -> int:
    return len(list(workdir.glob("started.*")))


def _start_and_fill(workdir: Path):
    """Run the experiment headless, wait until both first jobs run, fill the store, open the gate;
    returns (process, stderr file, filler) once the run has said the store is full."""
    err_path = workdir / "run.err"
    err = open(err_path, "w")  # noqa: SIM115 - the run writes to it until it ends
    proc = cli_popen(
        "run", "--headless", "experiment.json", cwd=workdir, stdout=subprocess.DEVNULL, stderr=err
    )
    _wait_for(lambda: _started(workdir) == 2 or proc.poll() is not None, "the first two jobs to start")
    assert proc.poll() is None, err_path.read_text()
    filler = _fill(workdir / ".aup" / "store")
    (workdir / "gate").touch()
    _wait_for(
        lambda: "store can't be written" in err_path.read_text() or proc.poll() is not None,
        "the run to say the store is full",
    )
    assert proc.poll() is None, err_path.read_text()
    return proc, err_path, filler


def test_jobs_finishing_on_a_full_store_are_kept_and_the_run_carries_on(full_store):
    workdir = full_store
    proc, err_path, filler = _start_and_fill(workdir)
    text = err_path.read_text()
    assert "No space left on device" in text and "results waiting" in text and "free space" in text
    assert _started(workdir) == 2  # no job started while the store was full
    assert "Traceback" not in text
    filler.unlink()  # room again: the run writes what waited and goes on by itself
    assert proc.wait(timeout=60) == 0, err_path.read_text()
    text = err_path.read_text()
    assert text.count("store can't be written") == 1, text  # said once
    assert "store can be written again" in text and "Traceback" not in text
    out = cli("status", "--json", cwd=workdir)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["status"] == "FINISHED"
    assert [j["status"] for j in status["jobs"]] == ["FINISHED"] * 6
    assert all(j["score"] == j["config"]["x"] for j in status["jobs"])  # scores as the jobs printed them


@pytest.mark.parametrize("how", ["stop-command", "sigint"])
def test_stop_works_while_the_store_is_full(full_store, how):
    workdir = full_store
    proc, err_path, filler = _start_and_fill(workdir)
    if how == "sigint":
        proc.send_signal(signal.SIGINT)
    else:
        res = cli("stop", "--experiment", "1", cwd=workdir)
        assert res.returncode == 0, res.stderr
    assert proc.wait(timeout=30) == 130, err_path.read_text()
    text = err_path.read_text()
    assert "Traceback" not in text, text
    assert "were not written" in text  # what could not be kept is named
    status = cli("status", "--json", cwd=workdir)  # the store is still readable, full as it is
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    filler.unlink()
    assert cli("status", cwd=workdir).returncode == 0


def test_failed_append_leaves_no_torn_line(tmp_path, monkeypatch):
    """A write refused half-way is cut back: the journal ends with its last complete operation."""
    storage = JournaledStorage(str(tmp_path / "db.json"))
    storage.append([{"t": "jobs", "id": "1", "d": {"a": 1}}])
    real_write = os.write
    calls = []

    def short_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:5]))  # a short write …
        raise OSError(errno.ENOSPC, "No space left on device")  # … then no room

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(StoreWriteError) as info:
        storage.append([{"t": "jobs", "id": "2", "d": {"b": 2}}])
    monkeypatch.setattr(os, "write", real_write)
    assert info.value.errno == errno.ENOSPC and info.value.path.endswith("db.json.log")
    assert (tmp_path / "db.json.log").read_bytes() == b'{"t":"jobs","id":"1","d":{"a":1}}\n'
    storage.append([{"t": "jobs", "id": "2", "d": {"b": 2}}])  # room again: appends as usual
    assert JournaledStorage(str(tmp_path / "db.json")).read() == {"jobs": {"1": {"a": 1}, "2": {"b": 2}}}


def test_short_writes_are_completed(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))
    storage = JournaledStorage(str(tmp_path / "db.json"))
    storage.append([{"t": "jobs", "id": "1", "d": {"text": "x" * 100}}])
    monkeypatch.setattr(os, "write", real_write)
    assert JournaledStorage(str(tmp_path / "db.json")).read() == {"jobs": {"1": {"text": "x" * 100}}}


def test_files_follow_the_umask(tmp_path):
    """Everything under .aup/ is created 0o666/0o777 less the umask (077 here: private)."""
    script = "import os, sys; os.umask(0o077); from aup_tui.cli import main; sys.exit(main(sys.argv[1:]))"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    write_script(tmp_path, "job.sh", 'echo "#Auptimizer:1"')
    write_experiment(tmp_path, n_samples=2)
    for args in (["init", "--cpu", "2"], ["run", "--headless", "experiment.json"], ["status"]):
        res = subprocess.run(
            ["python", "-c", script, *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert res.returncode == 0, res.stderr
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in (tmp_path / ".aup").rglob("*")}
    assert any(name.endswith(".json.log") for name in modes) and ".aup/store.lock" in modes
    assert {name: m for name, m in modes.items() if m & 0o077} == {}


def test_ids_never_restart_when_meta_json_is_lost(workdir):
    """meta.json deleted: the next experiment and jobs get new ids, experiment 1 is rebuilt, untouched."""
    write_experiment(workdir, n_samples=3)
    assert cli("run", "--headless", "experiment.json", cwd=workdir).returncode == 0
    store = workdir / ".aup" / "store"
    before = json.loads((store / "e1" / "jobs-0.json").read_text())
    configs = {p.name: p.read_text() for p in (workdir / "jobs").glob("*.json")}
    (store / "meta.json").unlink()
    res = cli("run", "--headless", "experiment.json", cwd=workdir)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert json.loads((store / "e1" / "jobs-0.json").read_text()) == before
    assert {p.name: p.read_text() for p in (workdir / "jobs").glob("*.json") if p.name in configs} == configs
    c = TinyDBConnector(str(workdir / ".aup"))
    exps = c.experiments()
    assert [e["eid"] for e in exps] == [1, 2] and exps[0]["status"] == "FINISHED"
    jids1, jids2 = ({j["jid"] for j in c.jobs(e)} for e in (1, 2))
    assert len(jids1) == len(jids2) == 3 and not jids1 & jids2
    c.close()


def test_damaged_meta_json_is_moved_aside_with_one_message(workdir):
    write_experiment(workdir, n_samples=2)
    assert cli("run", "--headless", "experiment.json", cwd=workdir).returncode == 0
    meta = workdir / ".aup" / "store" / "meta.json"
    meta.write_bytes(meta.read_bytes()[:40])  # truncated
    res = cli("status", cwd=workdir)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and str(meta) in res.stderr and "moved it to" in res.stderr
    assert "experiment 1 'test': FINISHED" in res.stdout
    assert list(meta.parent.glob("meta.json.damaged-*"))


def test_damaged_job_shard_is_named_in_one_line(workdir):
    write_experiment(workdir, n_samples=2)
    assert cli("run", "--headless", "experiment.json", cwd=workdir).returncode == 0
    shard = workdir / ".aup" / "store" / "e1" / "jobs-0.json"
    shard.write_bytes(b"\x00\xff garbage")
    res = cli("status", "--json", cwd=workdir)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and str(shard) in res.stderr and "move it aside" in res.stderr
