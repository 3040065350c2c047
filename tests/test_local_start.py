"""How a local job starts: a session of its own, stdin from /dev/null, SIGPIPE at its default,
no descriptor but its output, its exit status as is."""

from __future__ import annotations

import os

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


def test_running_local_jobs_lowers_the_thread_switch_interval_only(tmp_path):
    """A job's thread gets the interpreter back within SWITCH_INTERVAL of its output or exit."""
    import sys

    from aup_tui_backends.resources.cpu import SWITCH_INTERVAL, CPUResourceManager
    from aup_tui_backends.store import TinyDBConnector

    before = sys.getswitchinterval()
    store = TinyDBConnector(str(tmp_path / ".aup"))
    try:
        sys.setswitchinterval(0.005)
        CPUResourceManager(store, 2)
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
        sys.setswitchinterval(SWITCH_INTERVAL / 2)
        CPUResourceManager(store, 2)
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL / 2)
    finally:
        sys.setswitchinterval(before)
        store.close()
