"""How a local job starts: a session of its own, stdin from /dev/null, SIGPIPE at its default,
no descriptor but its output, its exit status as is."""

from __future__ import annotations

import os
import threading

import pytest
from aup_tui_backends.resources.processes import start_process
from helpers import write_script

ENV = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}


def test_a_job_starts_in_a_session_of_its_own_in_its_folder(tmp_path):
    script = write_script(
        tmp_path,
        "job.sh",
        """
        yes | head -n 1 > /dev/null      # yes dies of SIGPIPE: no 'Broken pipe' complaint
        read line || echo "stdin empty"
        echo "session $(ps -o sid= -p $$ | tr -d ' ')"
        echo "folder $PWD"
        exit 3
        """,
    )
    proc = start_process([str(script), "config.json"], str(tmp_path), ENV)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    proc.stdout.close()
    assert proc.wait() == 3
    assert "Broken pipe" not in out
    assert "stdin empty" in out
    assert f"session {proc.pid}" in out  # the leader of a session of its own
    assert f"folder {tmp_path}" in out


def test_a_job_killed_by_a_signal_reports_it(tmp_path):
    script = write_script(tmp_path, "job.sh", "kill -9 $$\n")
    proc = start_process([str(script)], str(tmp_path), ENV)
    assert proc.stdout is not None
    proc.stdout.read()
    proc.stdout.close()
    assert proc.wait() == -9


def test_a_job_inherits_no_descriptor_but_its_output(tmp_path):
    """A descriptor our own parent left open (a CI runner's pipe) must not keep a job's
    caller waiting: the job gets stdin, stdout and stderr only."""
    script = write_script(tmp_path, "job.sh", "ls /proc/$$/fd | sort -n | tr '\\n' ' '\n")
    r, w0 = os.pipe()
    w = os.dup2(w0, 231, inheritable=True)  # far from the shell's own (it reads its script on 10)
    os.close(w0)
    try:
        proc = start_process([str(script)], str(tmp_path), ENV)
        assert proc.stdout is not None
        fds = {int(n) for n in proc.stdout.read().split()}
        proc.stdout.close()
        proc.wait()
    finally:
        os.close(r)
        os.close(w)
    assert w not in fds and {0, 1, 2} <= fds


@pytest.mark.parametrize("first_line", ["#!/nonexistent/interpreter", "echo no shebang"])
def test_a_script_that_cannot_start_raises(tmp_path, first_line):
    script = tmp_path / "job.sh"
    script.write_text(first_line + "\n")
    script.chmod(0o755)
    with pytest.raises(OSError):
        start_process([str(script)], str(tmp_path), ENV)


def test_local_jobs_run_without_a_thread_each_and_leave_the_interpreter_settings_alone(tmp_path):
    """Many jobs, several at a time, are followed by one thread (not one each), every one ends
    with its score, and the embedding program's thread switch interval is left as it was."""
    import sys

    from aup_tui_backends.jobs import Job
    from aup_tui_backends.resources.cpu import CPUResourceManager
    from aup_tui_backends.setup import init_aup
    from aup_tui_backends.store import TinyDBConnector

    auppath = str(tmp_path / ".aup")
    init_aup(auppath, cpu=4, overwrite=True)
    (tmp_path / "job.sh").write_text('#!/bin/sh\necho "#Auptimizer:$AUP_JOB_ID"\n')
    (tmp_path / "job.sh").chmod(0o755)
    store = TinyDBConnector(auppath)
    before = sys.getswitchinterval()
    threads: set[str] = set()
    scores: dict[int, float] = {}
    started = [0]
    lock = threading.Lock()
    rm = CPUResourceManager(store, 4)

    def start_one() -> None:
        with lock:  # a free cpu is picked and taken by one caller at a time
            if started[0] < 40:
                started[0] += 1
                rm.run_job(Job("job.sh", {}, str(tmp_path)), rm.get_available("me", "cpu"), {}, ended)

    def ended(score, jid) -> None:
        scores[jid] = score
        threads.add(threading.current_thread().name)
        start_one()

    try:
        for _ in range(4):
            start_one()
        rm.finish()
        assert len(scores) == 40
        assert all(score == jid for jid, score in scores.items())
        assert len(threads) == 1, threads
        assert sys.getswitchinterval() == before
    finally:
        store.close()


def test_a_job_that_cannot_be_followed_fails_with_why_and_is_not_left_running(tmp_path, monkeypatch):
    """Out of file descriptors after the job started (its exit can't be watched): the job
    fails saying so, and its process is killed rather than left running unseen."""
    import errno

    from aup_tui_backends.jobs import Job
    from aup_tui_backends.resources import reactor
    from aup_tui_backends.resources.cpu import CPUResourceManager
    from aup_tui_backends.setup import init_aup
    from aup_tui_backends.store import TinyDBConnector

    def no_descriptors(proc):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    auppath = str(tmp_path / ".aup")
    init_aup(auppath, cpu=1, overwrite=True)
    write_script(tmp_path, "job.sh", 'sleep 30; echo "#Auptimizer:1"')
    store = TinyDBConnector(auppath)
    monkeypatch.setattr(reactor, "exit_fd", no_descriptors)
    try:
        rm = CPUResourceManager(store, 1)
        got: list = []
        job = Job("job.sh", {}, str(tmp_path), retries=0)
        rm.run_job(job, rm.get_available("me", "cpu"), {}, lambda score, jid: got.append(score))
        rm.finish()
        assert got == [None]
        assert job.status == "FAILED" and "Too many open files" in job.error
        assert store.get_job(job.jid, rm.eid)["status"] == "FAILED"
        assert not _processes_running(str(tmp_path / "job.sh"))
    finally:
        store.close()


def test_waiting_for_the_jobs_from_a_jobs_callback_says_why_instead_of_hanging(tmp_path):
    """`finish()` (which waits for the running jobs) called from a job's callback would wait
    for itself: it raises, saying so, and the experiment's own wait still works after."""
    from aup_tui_backends.jobs import Job
    from aup_tui_backends.resources.cpu import CPUResourceManager
    from aup_tui_backends.setup import init_aup
    from aup_tui_backends.store import TinyDBConnector

    auppath = str(tmp_path / ".aup")
    init_aup(auppath, cpu=1, overwrite=True)
    write_script(tmp_path, "job.sh", 'echo "#Auptimizer:1"')
    store = TinyDBConnector(auppath)
    try:
        rm = CPUResourceManager(store, 1)
        errors: list[str] = []

        def finish_too_early(score, jid) -> None:
            try:
                rm.finish()
            except RuntimeError as exc:
                errors.append(str(exc))

        rm.run_job(Job("job.sh", {}, str(tmp_path)), rm.get_available("me", "cpu"), {}, finish_too_early)
        assert rm.finish() is not None
        assert errors == ["waiting for the jobs from a job's callback would wait for ever"]
    finally:
        store.close()


def _processes_running(arg: str) -> list[int]:
    """Pids of the processes with `arg` in their command line."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if arg.encode() in f.read().split(b"\0"):
                        pids.append(int(entry))
            except OSError:
                pass
    return pids
