"""Jobs on SSH nodes, end to end against a real OpenSSH sshd on 127.0.0.1 (see sshd.py): how they
end, what they leave behind, what other users of the node can see, and what a person is told.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import cli, pid_alive, write_experiment, write_script
from sshd import sshd_factory, sshd_server, sshd_servers  # noqa: F401  (fixtures)
from test_ssh_manager import (
    group_processes,
    make_manager,
    node_folder,
    start_job,
    wait_for,
)


def _kill_quietly(pid: int) -> None:
    import os
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _children(folder: Path) -> list[int]:
    return [int(f.read_text()) for f in (folder / "jobs").glob("*.child") if f.read_text().strip()]


# -- a job ends when its script exits ------------------------------------------------------------


@pytest.mark.parametrize("async_run", [False, True], ids=["sync", "async"])
def test_a_background_child_holding_stdout_does_not_keep_a_node_job_running(
    sshd_servers, tmp_path, async_run
):
    folder = node_folder(tmp_path, [sshd_servers[15]], script=False)
    write_script(
        folder,
        "bg.sh",
        """
        (sleep 600 & echo $! > "$1.child")
        echo "#Auptimizer:0.5"
    """,
    )
    rm = make_manager(folder, async_run=async_run, async_reconnect=0.1)
    try:
        job, done = start_job(rm, folder, "./bg.sh", {"x": 1})
        assert done.wait(20), "the job was still RUNNING 20 s after its script exited"
        record = rm.connector.get_job(job.jid)
        assert record["status"] == "FINISHED" and record["score"] == 0.5, record
        [child] = _children(folder)
        assert wait_for(lambda: not pid_alive(child), 5), (
            "what the job left behind on the node was not killed"
        )
    finally:
        rm.finish()
        for pid in _children(folder):
            _kill_quietly(pid)


def test_stop_ends_a_node_job_whose_child_holds_its_output(sshd_servers, tmp_path):
    folder = node_folder(tmp_path, [sshd_servers[15]], script=False)
    write_script(
        folder,
        "bgwait.sh",
        """
        (sleep 600 & echo $! > "$1.child")
        echo "#Auptimizer:1"
        sleep 600
    """,
    )
    rm = make_manager(folder)
    try:
        job, done = start_job(rm, folder, "./bgwait.sh", {"x": 1})
        log = folder / "jobs" / f"{job.jid}.1.out"
        assert wait_for(lambda: log.exists() and "#Auptimizer:1" in log.read_text(), 20)
        pgid = rm._states[job.jid].pgid
        [child] = _children(folder)
        assert child in group_processes(pgid)
        assert rm.stop_job(job.jid)
        assert done.wait(20)
        assert wait_for(lambda: not pid_alive(child), 5)
        assert not group_processes(pgid)
        record = rm.connector.get_job(job.jid)
        assert record["status"] == "STOPPED" and record["score"] == 1
    finally:
        rm.finish()
        for pid in _children(folder):
            _kill_quietly(pid)


@pytest.mark.parametrize("async_run", [False, True], ids=["sync", "async"])
def test_stop_all_then_finish_kills_the_running_node_jobs_quickly(sshd_servers, tmp_path, async_run):
    """What `Experiment.stop` does at the end of a run (`finish()` alone waits for the jobs, as
    Auptimizer's does: see test_ssh_save_model.py)."""
    folder = node_folder(tmp_path, [sshd_servers[15]], script=False, slots=2)
    write_script(
        folder,
        "long.sh",
        """
        trap '' TERM
        (sleep 600 & echo $! > "$1.child")
        echo "#Auptimizer:1"
        sleep 600
    """,
    )  # ignores SIGTERM: only the SIGKILL after kill_grace ends it
    rm = make_manager(folder, n_parallel=2, async_run=async_run, async_reconnect=0.1)
    finished = False
    try:
        jobs = [start_job(rm, folder, "./long.sh", {"x": i}) for i in range(2)]
        assert wait_for(
            lambda: (
                len(_children(folder)) == 2
                and all(rm._states.get(j.jid) and rm._states[j.jid].pgid for j, _ in jobs)
            ),
            20,
        )
        groups = [rm._states[j.jid].pgid for j, _ in jobs]
        children = _children(folder)
        start = time.monotonic()
        rm.stop_all(reason="experiment stopped")
        rm.finish()
        finished = True
        took = time.monotonic() - start
        assert took < 10, f"finish took {took:.1f} s"
        assert all(done.is_set() for _, done in jobs)
        assert not any(group_processes(g) for g in groups)
        assert not any(pid_alive(c) for c in children)
    finally:
        if not finished:
            rm.stop_all(reason="test over")
            rm.finish()
        for pid in _children(folder):
            _kill_quietly(pid)


# -- what other users of the node can see ------------------------------------------------------------


@pytest.mark.parametrize("async_run", [False, True], ids=["sync", "async"])
def test_env_values_are_not_on_the_nodes_command_lines_and_the_job_sees_them(
    sshd_servers, tmp_path, async_run
):
    folder = node_folder(tmp_path, [sshd_servers[15]], script=False)
    secret = "s3cr3t-" + "x" * 12 + "-token"
    gate = folder / "gate"
    write_script(
        folder,
        "secret.sh",
        f"""
        printf '%s' "$API_TOKEN" > "$1.seen"
        i=0
        while [ ! -e {gate} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
        echo "#Auptimizer:1"
    """,
    )
    rm = make_manager(folder, async_run=async_run, async_reconnect=0.1)
    try:
        job, done = start_job(
            rm, folder, "./secret.sh", {"x": 1}, runtime_args={"env": {"API_TOKEN": secret, "N": 3}}
        )
        seen = folder / "jobs" / f"{job.jid}.json.seen"
        assert wait_for(lambda: seen.exists() and seen.read_text(), 20)
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
        assert "secret.sh" in ps  # the job is running now
        assert secret not in ps, [line for line in ps.splitlines() if secret in line]
        assert seen.read_text() == secret  # and it saw the value
        assert not list((folder / "jobs").glob("*.env")), "the environment file outlived the job's start"
        gate.write_text("go")
        assert done.wait(20)
        assert rm.connector.get_job(job.jid)["status"] == "FINISHED"
    finally:
        gate.write_text("go")
        rm.finish()


def test_env_numbers_become_strings_and_other_values_fail_naming_the_key_on_a_node(sshd_servers, tmp_path):
    folder = node_folder(tmp_path, [sshd_servers[15]], script=False)
    write_script(folder, "env.sh", 'echo "n=$N f=$F b=$B"\necho "#Auptimizer:1"\n')
    rm = make_manager(folder)
    try:
        job, done = start_job(
            rm, folder, "./env.sh", {}, runtime_args={"env": {"N": 3, "F": 0.5, "B": False}}
        )
        assert done.wait(20)
        assert rm.connector.get_job(job.jid)["status"] == "FINISHED"
        assert "n=3 f=0.5 b=false" in (folder / "jobs" / f"{job.jid}.1.out").read_text()
        for value, shown in ((None, "null"), ([1], "a list"), ({"k": "v"}, "an object")):
            job, done = start_job(rm, folder, "./env.sh", {}, runtime_args={"env": {"DEEP": value}})
            assert done.wait(20)
            record = rm.connector.get_job(job.jid)
            assert record["status"] == "FAILED"
            assert record["error"].startswith(
                f"runtime_args.env.DEEP must be a string or a number, not {shown}"
            )
    finally:
        rm.finish()


# -- what a person is told ------------------------------------------------------------------------


@pytest.mark.parametrize("prescript, status", [("exit 3", 3), ("false", 1), (". ./no-such-setup.sh", None)])
def test_a_failing_prescript_on_a_node_is_reported_as_such(sshd_servers, tmp_path, prescript, status):
    folder = node_folder(tmp_path, [sshd_servers[15]], script=False)
    write_script(folder, "mark.sh", 'touch "$1.ran"\necho "#Auptimizer:1"\n')
    rm = make_manager(folder)
    try:
        job, done = start_job(rm, folder, "./mark.sh", {}, runtime_args={"prescript": prescript})
        assert done.wait(20)
        record = rm.connector.get_job(job.jid)
        assert record["status"] == "FAILED"
        expected = "prescript exited with status " + (str(status) if status is not None else "")
        assert record["error"].startswith(expected) and "mark.sh did not run" in record["error"], record[
            "error"
        ]
        assert not (folder / "jobs" / f"{job.jid}.json.ran").exists()
    finally:
        rm.finish()


def test_a_remote_script_without_its_execute_bit_is_made_executable(sshd_servers, tmp_path):
    folder = node_folder(tmp_path, [sshd_servers[15]], script=False)
    remote_wd = tmp_path / "remote side"
    remote_wd.mkdir()
    write_script(remote_wd, "job.sh", 'echo "#Auptimizer:7"\n').chmod(0o644)  # already there, not executable
    write_script(folder, "job.sh", 'echo "#Auptimizer:7"\n')
    rm = make_manager(folder)
    try:
        job, done = start_job(rm, folder, "./job.sh", {}, workingdir=str(remote_wd))
        assert done.wait(20)
        record = rm.connector.get_job(job.jid)
        assert record["status"] == "FINISHED" and record["score"] == 7, record["error"]
    finally:
        rm.finish()


def test_a_remote_workingdir_that_is_a_file_fails_the_job_with_one_message(sshd_servers, tmp_path):
    folder = node_folder(tmp_path, [sshd_servers[15]], script=False)
    write_script(folder, "job.sh", 'echo "#Auptimizer:1"\n')
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    rm = make_manager(folder)
    try:
        job, done = start_job(rm, folder, "./job.sh", {}, workingdir=str(afile))
        assert done.wait(20)
        record = rm.connector.get_job(job.jid)
        assert record["status"] == "FAILED"
        assert (
            f"{afile} on " in record["error"]
            and "is a file, not a folder: fix 'workingdir'" in record["error"]
        )
    finally:
        rm.finish()


class NotSSH:
    """A plain TCP listener on 127.0.0.1 that answers every connection like a web server (or
    just closes it)."""

    def __init__(self, reply: bytes):
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                if self.reply:
                    try:
                        conn.sendall(self.reply)
                    except OSError:
                        pass

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("reply", [b"HTTP/1.1 400 Bad Request\r\n\r\n", b""], ids=["garbage", "closes"])
def test_a_port_that_is_not_ssh_gives_one_clear_message(tmp_path, reply):
    from aup_tui_backends.setup import init_aup

    listener = NotSSH(reply)
    try:
        init_aup(str(tmp_path / ".aup"), node=[f"me@127.0.0.1:{listener.port}"])
        write_script(tmp_path, "job.sh", 'echo "#Auptimizer:1"\n')
        path = write_experiment(
            tmp_path,
            script="./job.sh",
            resource="node",
            n_samples=1,
            n_parallel=1,
            resource_args={
                "accept_new_hosts": True,
                "known_hosts": str(tmp_path / "kh"),
                "reconn_wait_time": 0.1,
                "max_retries": 0,
                "connect_timeout": 3,
            },
        )
        out = cli("run", "--headless", str(path), cwd=tmp_path)
        assert out.returncode == 1
        assert "Traceback" not in out.stderr + out.stdout, out.stderr
        assert (
            f"job 1 failed: cannot connect to me@127.0.0.1:{listener.port}: it closed the connection without "
            "an SSH greeting (is it an SSH server? check the host and port in env.ini)"
        ) in out.stderr, out.stderr
    finally:
        listener.close()


class SilentPort(NotSSH):
    """Accepts connections and never says a word."""

    def _serve(self) -> None:
        held = []
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                for c in held:
                    c.close()
                return
            held.append(conn)


def test_a_port_that_never_greets_gives_one_clear_message_and_no_traceback(tmp_path, capfd):
    from aup_tui_backends.config import HostSpec
    from aup_tui_backends.ssh import NodePool, NodeUnreachableError

    listener = SilentPort(b"")
    pool = NodePool(known_hosts=str(tmp_path / "kh"), accept_new_hosts=True, connect_timeout=1)
    try:
        pool.add_node("n", HostSpec(user="me", host="127.0.0.1", port=listener.port, key=None))
        with pytest.raises(NodeUnreachableError) as info:
            pool.get_client("n")
        assert str(info.value) == (
            f"cannot connect to me@127.0.0.1:{listener.port}: no SSH greeting within 1 s "
            "(is it an SSH server? check the host and port in env.ini)"
        )
        for t in threading.enumerate():
            if t is not threading.current_thread() and type(t).__name__ == "Transport":
                t.join(5)
        captured = capfd.readouterr()
        assert "Traceback" not in captured.err + captured.out, captured.err
    finally:
        listener.close()
        pool.close()


# -- a channel whose command never starts --------------------------------------------------------


def _hang_first_config(tmp_path: Path, what: str) -> list[str]:
    """sshd_config lines for a node that accepts the first job's command (`what` = "job") or the
    first SFTP session ("sftp") and never starts it (the channel stays open and silent); every
    later one works."""
    force = tmp_path / "force.sh"
    gate = tmp_path / "first-hung"
    hang = f"if mkdir {gate} 2>/dev/null; then exec sleep 600; fi"
    force.write_text(
        'case "$SSH_ORIGINAL_COMMAND" in\n'
        f"  internal-sftp) {hang if what == 'sftp' else ':'}; exec /usr/lib/openssh/sftp-server ;;\n"
        f"  *aup-job*) {hang if what == 'job' else ':'} ;;\n"
        "esac\n"
        'exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n'
    )
    return [f"ForceCommand /bin/sh {force}"]


@pytest.mark.parametrize("what", ["job", "sftp"])
def test_a_channel_that_never_starts_is_retried_within_start_timeout(sshd_factory, tmp_path, what):
    if not Path("/usr/lib/openssh/sftp-server").exists():
        pytest.skip("needs OpenSSH's sftp-server at /usr/lib/openssh/sftp-server")
    server = sshd_factory.new(extra_config=_hang_first_config(tmp_path, what))
    try:
        folder = node_folder(tmp_path, [server], script=False)
        write_script(folder, "job.sh", 'echo "#Auptimizer:2"\n')
        rm = make_manager(folder, start_timeout=1, reconn_wait_time=0.1, max_retries=2)
        try:
            job, done = start_job(rm, folder, "./job.sh", {})
            assert done.wait(30), f"the job hung on a {what} channel that never started"
            record = rm.connector.get_job(job.jid)
            assert record["status"] == "FINISHED" and record["score"] == 2, record
            assert (tmp_path / "first-hung").is_dir()  # the first attempt did hang
            log = (folder / "jobs" / f"{job.jid}.1.out").read_text()
            assert "start_timeout" in log and "retrying" in log, log
        finally:
            rm.finish()
    finally:
        server.kill()


def test_a_file_where_the_local_jobs_folder_goes_fails_the_job_with_one_message(sshd_servers, tmp_path):
    folder = node_folder(tmp_path, [sshd_servers[15]], script=False)
    write_script(folder, "job.sh", 'echo "#Auptimizer:1"\n')
    (folder / "jobs").write_text("not a folder")
    rm = make_manager(folder)
    try:
        job, done = start_job(rm, folder, "./job.sh", {}, workingdir=str(tmp_path / "on the node"))
        assert done.wait(20)
        record = rm.connector.get_job(job.jid)
        assert record["status"] == "FAILED"
        assert record["error"] == (
            f"{folder / 'jobs'} is a file, but the job's config and log are kept in a "
            "folder of that name beside the script: move the file away"
        )
        assert not rm._states  # nothing left running
    finally:
        rm.finish()
