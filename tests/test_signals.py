"""SIGTERM and SIGHUP (a closed terminal, `tmux kill-session`, a scheduler's time limit) stop the
experiment like a stop: every job's process group killed, jobs and experiment recorded STOPPED,
resources free, exit 130 — headless and in the TUI (run under a real pty). A watcher just leaves."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

import pytest
from helpers import cli, cli_popen, pid_alive, write_experiment, write_script
from sshd import sshd_factory, sshd_server  # noqa: F401  (fixtures)

# Each job leaves the pids of its shell and of the shell's child, then waits for the child.
JOB = """
    dir=$(dirname "$1")
    echo "#Auptimizer:0.5"
    sleep 120 &
    echo $! > "$dir/$AUP_JOB_ID.child"
    echo $$ > "$dir/$AUP_JOB_ID.pid"
    wait
"""


def setup_run(tmp_path: Path) -> None:
    assert cli("init", "--cpu", "2", cwd=tmp_path).returncode == 0
    write_script(tmp_path, "job.sh", JOB)
    write_experiment(tmp_path, n_samples=6, n_parallel=2)


def wait_until(predicate, timeout: float = 20.0, what: str = "condition", proc=None):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"aup-tui exited ({proc.returncode}) before {what}: "
                f"{proc.stderr.read() if proc.stderr else ''}"
            )
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def job_pids(tmp_path: Path) -> list[int]:
    """The pids of both running jobs (shell and child each), once all four are written."""
    files = [tmp_path / "jobs" / f"{jid}.{ext}" for jid in (1, 2) for ext in ("pid", "child")]
    if not all(f.exists() and f.read_text().strip() for f in files):
        return []
    return [int(f.read_text()) for f in files]


def all_gone(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def assert_stopped_and_free(tmp_path: Path, pids: list[int]) -> None:
    assert all_gone(pids), "the jobs' processes (shells and their children) must be gone"
    st = json.loads(cli("status", "--json", cwd=tmp_path).stdout)
    assert st["status"] == "STOPPED"
    assert st["jobs"] and {j["status"] for j in st["jobs"]} == {"STOPPED"}
    assert all(j["score"] == 0.5 for j in st["jobs"])  # results so far are kept
    listing = cli("resources", cwd=tmp_path).stdout.splitlines()
    assert len(listing) == 2 and all(line.endswith(" free") for line in listing), listing


class Terminal:
    """A real pty for the TUI: its output is read all along (a full pty would block the app)."""

    def __init__(self, rows: int = 30, cols: int = 100) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)

    def start(self, *args: str, cwd: Path) -> subprocess.Popen:
        proc = cli_popen(
            *args, cwd=cwd, stdin=self.slave, stdout=self.slave, stderr=self.slave, start_new_session=True
        )
        os.close(self.slave)
        self._reader.start()
        return proc

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO once the other side is closed, EBADF once we closed it
                return
            if not data:
                return
            self.output.extend(data)

    def hang_up(self) -> None:
        """Close the terminal (as closing its window does): writes to it fail from now on."""
        os.close(self.master)
        self.master = -1

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)


def stop_with(proc: subprocess.Popen, sig: int) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(40)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("aup-tui did not exit after the signal") from None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_headless_run_stops_on_signal(tmp_path, sig):
    setup_run(tmp_path)
    proc = cli_popen(
        "run",
        "--headless",
        "experiment.json",
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    pids: list[int] = []
    try:
        pids = wait_until(lambda: job_pids(tmp_path), what="two running jobs", proc=proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=40)
        assert proc.returncode == 130, err
        assert f"{signal.Signals(sig).name}: stopping the experiment" in err and "STOPPED" in err
        assert_stopped_and_free(tmp_path, pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_leftovers(pids)


@pytest.mark.parametrize(
    "sig, hang_up",
    [(signal.SIGTERM, False), (signal.SIGHUP, True)],
    ids=["SIGTERM", "SIGHUP-terminal-closed"],
)
def test_tui_run_under_a_terminal_stops_on_signal(tmp_path, sig, hang_up):
    setup_run(tmp_path)
    term = Terminal()
    proc = term.start("run", "experiment.json", cwd=tmp_path)
    pids: list[int] = []
    try:
        pids = wait_until(lambda: job_pids(tmp_path), what="two running jobs", proc=proc)
        if hang_up:
            term.hang_up()  # the window is gone: the app's and the summary's writes fail (EIO)
        assert stop_with(proc, sig) == 130
        assert_stopped_and_free(tmp_path, pids)
        if not hang_up:
            shown = term.output.decode("utf-8", "replace")
            assert "\x1b[?1049l" in shown  # the terminal was given back (alternate screen left)
            assert "STOPPED" in shown.rsplit("\x1b[?1049l", 1)[1]  # and the summary printed after
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        term.close()
        kill_leftovers(pids)


def test_tui_quit_keep_running_then_sigterm_stops_it(tmp_path):
    """q, n: the dashboard closes and the run goes on with a progress line; SIGTERM then stops it."""
    setup_run(tmp_path)
    term = Terminal()
    proc = term.start("run", "experiment.json", cwd=tmp_path)
    pids: list[int] = []
    try:
        pids = wait_until(lambda: job_pids(tmp_path), what="two running jobs", proc=proc)
        os.write(term.master, b"q")
        wait_until(lambda: b"keep it running" in term.output, what="the quit question", proc=proc)
        os.write(term.master, b"n")
        wait_until(lambda: b"keeps running here" in term.output, what="the headless follower", proc=proc)
        assert stop_with(proc, signal.SIGTERM) == 130
        assert b"SIGTERM: stopping the experiment" in term.output
        assert_stopped_and_free(tmp_path, pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        term.close()
        kill_leftovers(pids)


def test_watch_leaves_on_sigterm_and_the_watched_run_goes_on(tmp_path):
    setup_run(tmp_path)
    runner = cli_popen(
        "run",
        "--headless",
        "experiment.json",
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    term = Terminal()
    pids: list[int] = []
    watcher = None
    try:
        pids = wait_until(lambda: job_pids(tmp_path), what="two running jobs", proc=runner)
        watcher = term.start("watch", cwd=tmp_path)
        wait_until(lambda: b"RUNNING" in term.output, what="the dashboard", proc=watcher)
        assert stop_with(watcher, signal.SIGTERM) == 130
        assert runner.poll() is None and all(pid_alive(p) for p in pids)  # not the watcher's to stop
        st = json.loads(cli("status", "--json", cwd=tmp_path).stdout)
        assert st["status"] == "RUNNING"
        assert stop_with(runner, signal.SIGTERM) == 130
        assert_stopped_and_free(tmp_path, pids)
    finally:
        for proc in (runner, watcher):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        term.close()
        kill_leftovers(pids)


def test_headless_run_on_ssh_nodes_stops_the_remote_jobs_on_sigterm(tmp_path, sshd_server):  # noqa: F811
    """Remote jobs: the signal reaches Experiment.stop, whose manager kills each remote process group."""
    remote = tmp_path / "node"  # the node's workingdir (the node is this machine, over real SSH)
    mapping = sshd_server.mapping_value()
    assert cli("init", "--node", f"{mapping},{mapping}", cwd=tmp_path).returncode == 0
    sshd_server.factory.write_known_hosts(tmp_path / "known_hosts", [sshd_server])
    remote.mkdir()
    write_script(remote, "job.sh", JOB)  # the script is looked for relative to the workingdir
    write_experiment(
        tmp_path,
        n_samples=6,
        n_parallel=2,
        resource="node",
        workingdir=str(remote),
        resource_args={"known_hosts": str(tmp_path / "known_hosts"), "kill_grace": 0.5},
    )
    proc = cli_popen(
        "run",
        "--headless",
        "experiment.json",
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    pids: list[int] = []
    try:
        pids = wait_until(lambda: job_pids(remote), what="two running remote jobs", proc=proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=40)
        assert proc.returncode == 130, err
        assert_stopped_and_free(tmp_path, pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_leftovers(pids)


async def test_a_node_probe_landing_while_the_app_closes_is_ignored():
    """An exit right after start (a signal) met the nodes monitor's first result with the panel's
    children already removed: the crash report then failed on the hung-up terminal (exit 1)."""
    from textual.app import App
    from textual.widgets import DataTable

    from aup_tui.widgets.nodes_panel import NodesPanel

    class Host(App):
        def compose(self):
            yield NodesPanel()

    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(NodesPanel)
        await panel.query_one(DataTable).remove()  # as during the app's teardown
        panel.update_statuses({})
        await pilot.pause()
        assert app.return_value is None and app._exit_renderables == []  # no crash report
