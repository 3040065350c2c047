"""What the command line does with the input a person gives it: `--aup` in either place, an
experiment no registered resource can run, damaged files, the umask, and one best job on ties.

Real processes on real `.aup` folders; every run has a deadline, so a hang fails the test."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, write_experiment, write_script

DEADLINE = 30.0


def aup(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    """`aup-tui ARGS` in its own session, HOME at `cwd` (no ~/.aup of the machine), no terminal;
    killed (and the test failed) if it does not end by the deadline, as a hung run would."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=str(cwd))
    proc = subprocess.Popen(
        [sys.executable, "-m", "aup_tui.cli", *args],
        cwd=cwd,
        env=env,
        text=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        **kw,
    )
    try:
        out, err = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"`aup-tui {' '.join(args)}` still running after {DEADLINE}s:\n{err}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
    return out.stderr.strip()


def job_script(folder: Path) -> None:
    write_script(folder, "job.sh", 'echo "#Auptimizer:0.5"\n')


# --- --aup before and after the command ---------------------------------------------------------


@pytest.fixture
def two_folders(tmp_path):
    """`here/.aup` (1 cpu, nothing run) is the cwd's; `there/.aup` (3 cpu) has finished experiment 1."""
    here, there = tmp_path / "here", tmp_path / "there"
    for folder, n in ((here, "1"), (there, "3")):
        folder.mkdir()
        assert aup("init", "--cpu", n, cwd=folder).returncode == 0
        job_script(folder)
        write_experiment(folder, name=folder.name, n_samples=1, n_parallel=1)
    assert aup("run", "--headless", "experiment.json", cwd=there).returncode == 0
    return here, there


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
def test_aup_acts_on_the_folder_given_before_or_after_the_command(two_folders, before):
    here, there = two_folders
    other = str(there / ".aup")

    def run(*args: str) -> subprocess.CompletedProcess:
        argv = ("--aup", other, *args) if before else (args[0], "--aup", other, *args[1:])
        return aup(*argv, cwd=here)

    st = run("status", "--json")
    assert st.returncode == 0 and json.loads(st.stdout)["name"] == "there"
    assert run("resources").stdout.count(" cpu ") == 3
    stop = one_line_error(run("stop", "--experiment", "1"))
    assert "experiment 1 is not running (it is FINISHED)" in stop  # here has no experiment 1
    assert run("run", "--headless", str(here / "experiment.json")).returncode == 0
    assert json.loads(run("status", "--json").stdout)["eid"] == 2  # recorded there, not here
    assert one_line_error(aup("status", cwd=here)).endswith("start one with `aup-tui run experiment.json`")
    made = here / "made"
    argv = (
        ("--aup", str(made), "init", "--cpu", "2") if before else ("init", "--aup", str(made), "--cpu", "2")
    )
    assert aup(*argv, cwd=here).returncode == 0 and (made / "env.ini").is_file()
    missing = str(here / "missing")  # commands that open the TUI: the folder's error, not ./.aup's app
    for args in (("watch",), ("run", "experiment.json"), ("stop", "--job", "1")):
        argv = ("--aup", missing, *args) if before else (args[0], "--aup", missing, *args[1:])
        assert f"no env.ini in {missing}" in one_line_error(aup(*argv, cwd=here))


def test_aup_in_both_places_must_agree(two_folders):
    here, there = two_folders
    same = aup("--aup", str(there / ".aup"), "status", "--json", "--aup", str(there / ".aup") + "/", cwd=here)
    assert same.returncode == 0 and json.loads(same.stdout)["name"] == "there"
    error = one_line_error(
        aup("--aup", str(there / ".aup"), "stop", "--experiment", "1", "--aup", str(here / ".aup"), cwd=here)
    )
    assert "--aup is given twice with different folders" in error and "give it once" in error


# --- no registered resource of the experiment's type ---------------------------------------------


def no_resource_error(folder: Path, headless: bool = True) -> str:
    out = aup("run", *(["--headless"] if headless else []), "experiment.json", cwd=folder)
    error = one_line_error(out)
    assert aup("status", cwd=folder).stderr.strip().endswith("`aup-tui run experiment.json`")  # nothing ran
    return error


@pytest.mark.parametrize("headless", [True, False], ids=["headless", "tui"])
def test_cpu_experiment_on_gpu_only_init_says_what_to_add(tmp_path, headless):
    assert aup("init", "--gpu", "0", cwd=tmp_path).returncode == 0
    job_script(tmp_path)
    write_experiment(tmp_path, n_samples=1)
    error = no_resource_error(tmp_path, headless)
    assert error == (
        f"aup-tui: no 'cpu' resource in {tmp_path / '.aup' / 'env.ini'} "
        "— add some with `aup-tui init --overwrite --gpu 0 --cpu 4`"
    )
    advice = error.split("`")[1].split()[1:]
    assert aup(*advice, cwd=tmp_path).returncode == 0  # the advice works as typed, GPUs kept
    assert aup("run", "--headless", "experiment.json", cwd=tmp_path).returncode == 0
    assert aup("resources", cwd=tmp_path).stdout.count(" gpu ") == 1


def test_init_cpu_0_then_a_cpu_experiment_is_refused(tmp_path):
    assert aup("init", "--cpu", "0", cwd=tmp_path).returncode == 0
    job_script(tmp_path)
    write_experiment(tmp_path, n_samples=1)
    assert no_resource_error(tmp_path).endswith("— add some with `aup-tui init --overwrite --cpu 4`")


def test_auptimizer_env_ini_without_cpus_and_passive_without_a_person(tmp_path):
    aup_dir = tmp_path / ".aup"
    aup_dir.mkdir()
    (aup_dir / "env.ini").write_text(
        f"[Auptimizer]\nAuptimizer_PATH = {aup_dir}\nSQL_ENGINE = sqlite\nTMP_FOLDER = /tmp/aup\n"
        'gpu_mapping = {"1": "0"}\nnode_mapping = {"2": "user@127.0.0.1:2222"}\n'
    )
    job_script(tmp_path)
    write_experiment(tmp_path, n_samples=1)
    assert "no 'cpu' resource" in no_resource_error(tmp_path)
    write_experiment(tmp_path, n_samples=1, resource="passive", n_parallel=1)
    assert no_resource_error(tmp_path).endswith(
        "add some with `aup-tui init --overwrite --gpu 0 --node user@127.0.0.1:2222 --passive`"
    )


def test_another_folder_is_named_in_the_init_advice(tmp_path):
    assert aup("init", "--aup", "elsewhere", "--gpu", "0", cwd=tmp_path).returncode == 0
    job_script(tmp_path)
    write_experiment(tmp_path, n_samples=1)
    error = one_line_error(aup("run", "--headless", "--aup", "elsewhere", "experiment.json", cwd=tmp_path))
    assert error.endswith(f"`aup-tui init --aup {tmp_path / 'elsewhere'} --overwrite --gpu 0 --cpu 4`")


@pytest.mark.parametrize("n_parallel", [0, -1])
def test_n_parallel_below_one_is_refused(workdir, n_parallel):
    write_experiment(workdir, n_parallel=n_parallel)
    error = one_line_error(aup("run", "--headless", "experiment.json", cwd=workdir))
    assert f"n_parallel in experiment.json must be a whole number of at least 1, got {n_parallel}" in error


def test_a_resource_taken_by_a_live_process_is_waited_for(workdir):
    """Only none registered is an error: the only cpu slots held by another live process → wait."""
    from aup_tui_backends.store import TinyDBConnector

    holder = TinyDBConnector(str(workdir / ".aup"))
    rids = [r["rid"] for r in holder.resources("cpu")]
    assert all(holder.take_available_resource(rid, 999) for rid in rids)
    write_experiment(workdir, n_samples=1, n_parallel=1)
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=str(workdir))
    proc = subprocess.Popen(
        [sys.executable, "-m", "aup_tui.cli", "run", "--headless", "experiment.json"],
        cwd=workdir,
        env=env,
        text=True,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stderr is not None
        seen = ""
        for line in proc.stderr:  # ends at EOF if the run gives up instead of waiting
            seen += line
            if "no free 'cpu' resource: waiting" in line:
                break
        assert "waiting" in seen, seen
        for rid in rids:
            holder.free_used_resource(rid)
        holder.close()
        rest = proc.communicate(timeout=DEADLINE)[1]
        assert proc.returncode == 0, seen + rest
    finally:
        proc.kill()


# --- damaged input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content", [b"\x00\xff\xfe\x89binary", b"user@host1\nroot@\x00\x01host2\n"], ids=["binary", "nul"]
)
def test_binary_node_file_is_one_line(tmp_path, content):
    (tmp_path / "nodes.txt").write_bytes(content)
    error = one_line_error(aup("init", "--node", "nodes.txt", cwd=tmp_path))
    assert "--node file nodes.txt" in error


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"\xff\xd8\xff\xe0binary", "is not UTF-8 text"),
        (b'{"name": "x", "script": "./job', "fix the JSON syntax"),
        (b"[1, 2]", "must hold a JSON object"),
        (
            b'{"name": 3, "script": "./job.sh", "resource": "cpu", "target": "max", "proposer": "random"}',
            "name in",
        ),
        (
            json.dumps(
                {
                    "name": "x",
                    "script": "./job.sh",
                    "resource": "cpu",
                    "target": "max",
                    "proposer": "random",
                    "n_samples": 1,
                    "parameter_config": [{"name": "x"}],
                    "runtime_args": {"env": [1]},
                }
            ).encode(),
            "runtime_args.env in",
        ),
        (
            json.dumps(
                {
                    "name": "x",
                    "script": "./job.sh",
                    "resource": "cpu",
                    "target": "max",
                    "proposer": "random",
                    "n_samples": 1,
                    "parameter_config": [{"name": "job_id"}],
                }
            ).encode(),
            "reserved name",
        ),
    ],
)
def test_damaged_experiment_file_is_one_line(workdir, content, fragment):
    (workdir / "experiment.json").write_bytes(content)
    assert fragment in one_line_error(aup("run", "--headless", "experiment.json", cwd=workdir))


@pytest.mark.parametrize(
    "content",
    [
        b"\x7fELF\x02\x01\x01\x00\x00\xff",
        b'[Auptimizer]\nAuptimizer_PATH = /x\ngpu_mapping = {"1":',
        b'[Auptimizer]\ngpu_mapping = ["0"]\n',
        b'[Auptimizer]\ngpu_mapping = {"1": "card zero"}\n',
    ],
    ids=["binary", "truncated", "list", "not-a-card"],
)
@pytest.mark.parametrize("command", [("status",), ("resources",), ("run", "--headless", "experiment.json")])
def test_damaged_env_ini_is_one_line_for_every_command(workdir, content, command):
    write_experiment(workdir, n_samples=1)
    (workdir / ".aup" / "env.ini").write_bytes(content)
    assert str(workdir / ".aup" / "env.ini") in one_line_error(aup(*command, cwd=workdir))


# --- the umask -----------------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o077, 0o600), (0o022, 0o644)])
def test_env_ini_follows_the_umask(tmp_path, umask, mode):
    assert aup("init", "--cpu", "1", cwd=tmp_path, umask=umask).returncode == 0
    assert stat.S_IMODE((tmp_path / ".aup" / "env.ini").stat().st_mode) == mode
    assert (
        aup("init", "--overwrite", "--passive", cwd=tmp_path, umask=0o022).returncode == 0
    )  # a rewrite keeps it
    assert stat.S_IMODE((tmp_path / ".aup" / "env.ini").stat().st_mode) == mode


# --- one best job on ties ------------------------------------------------------------------------


def test_tied_scores_name_the_same_best_job_in_progress_and_summary(tmp_path):
    """The first job (x=1) waits until the second (x=2) is recorded FINISHED, then reports the same
    score: the job that finished first is the best in the progress line, the summary and `status`."""
    assert aup("init", "--cpu", "2", cwd=tmp_path).returncode == 0
    write_script(
        tmp_path,
        "job.py",
        """
        import json, subprocess, sys
        x = json.load(open(sys.argv[1]))["x"]
        for _ in range(200):  # bounded: each look is a whole `aup-tui status` process
            if x == 2:
                break
            st = json.loads(subprocess.run([sys.executable, "-m", "aup_tui.cli", "status", "--json"],
                                           capture_output=True, text=True, check=True).stdout)
            if any(j["config"]["x"] == 2 and j["status"] == "FINISHED" for j in st["jobs"]):
                break
        else:
            sys.exit("job 2 never finished")
        print("#Auptimizer:0.5")
    """,
        shebang=f"#!{sys.executable}",
    )
    write_experiment(
        tmp_path,
        script="./job.py",
        proposer="sequence",
        n_parallel=2,
        n_samples=2,
        parameter_config=[{"name": "x", "type": "int", "range": [1, 2]}],
    )
    out = aup("run", "--headless", "experiment.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    st = json.loads(aup("status", "--json", cwd=tmp_path).stdout)
    first = next(j["jid"] for j in st["jobs"] if j["config"]["x"] == 2)
    later = next(j["jid"] for j in st["jobs"] if j["config"]["x"] == 1)
    assert later < first and st["best"]["jid"] == first  # the lower jid finished later: it loses
    progress = [line for line in out.stderr.splitlines() if "2/2" in line][-1]
    assert f"best 0.5 (job {first})" in progress
    assert f"best job {first}: score 0.5" in out.stderr


def test_catching_up_from_the_store_keeps_the_first_finished_of_equal_scores(tmp_path):
    """The TUI hands a running experiment to the terminal: jobs are counted from the store in jid
    order, yet the best is the one that finished first, as in `summarize`."""
    import io

    from aup_tui_backends.experiment import summarize
    from aup_tui_backends.store import TinyDBConnector

    from aup_tui.headless import Progress

    connector = TinyDBConnector(str(tmp_path / ".aup"))
    eid = connector.start_experiment(
        "me",
        "tie",
        {},
        n_samples=2,
        target="max",
        resource="cpu",
        workingdir=str(tmp_path),
        script="job.sh",
        path=None,
        n_parallel=2,
    )
    low, high = connector.new_jid(), connector.new_jid()
    for jid in (low, high):
        connector.start_job(eid, jid, {"x": jid}, None, "cpu0", 1)
    connector.end_job(eid, high, 0.5, "FINISHED")  # the higher jid ends first
    connector.end_job(eid, low, 0.5, "FINISHED")
    progress = Progress(2, True, io.StringIO())
    progress.catch_up(None, connector.jobs(eid))  # in jid order
    summary = summarize(connector, eid)
    assert progress.best == (0.5, high) == (summary.best_score, summary.best_jid)
    connector.close()
