"""Auptimizer 2.0's own `Examples/2dfunc_diff_res` experiments run unchanged with `aup-tui run`.

The files are in tests/fixtures/2dfunc_diff_res (see its README for where they come from and
the little a test replaces: placeholder hosts, and the node's folder on the authors' machines).
Each test copies the folder and runs the experiment from there, as an Auptimizer user would:
the CPUs and (listed) GPUs of this machine, a person answering passive jobs through the store,
real OpenSSH sshd nodes on 127.0.0.1 whose home folder is their own (not this process's $HOME),
and EC2 instances of a moto server whose SSH is such a node.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT
from sshd import sshd_factory  # noqa: F401  (fixture)
from test_aws_manager import FAKE_ENV, REGION, moto_url, new_instance, state_of  # noqa: F401  (fixture)

EXAMPLES = ROOT / "tests" / "fixtures" / "2dfunc_diff_res"
SFTP_SERVER = Path("/usr/lib/openssh/sftp-server")
RUN_TIMEOUT = 180


def rosen(x: float, y: float) -> float:
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def example(tmp_path: Path) -> Path:
    """A copy of the example folder, where the experiments are launched from."""
    folder = tmp_path / "2dfunc_diff_res"
    shutil.copytree(EXAMPLES, folder)
    return folder


def aup(folder: Path, *args: str, env: dict | None = None, timeout: float = RUN_TIMEOUT, **kw):
    """`aup-tui ARGS` as a real process in `folder`."""
    full = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "aup_tui.cli", *args],
        cwd=folder,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,
    )


def status(folder: Path, env: dict | None = None) -> dict:
    out = aup(folder, "status", "--json", env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def set_workingdir(path: Path, folder: str) -> dict:
    """Point an experiment's `workingdir` (a folder on the authors' node) at `folder`; the rest
    of the file stays as Auptimizer ships it."""
    original = json.loads(path.read_text())
    exp = dict(original, workingdir=folder)
    path.write_text(json.dumps(exp, indent=2))
    return original


def assert_all_finished(folder: Path, n: int, env: dict | None = None) -> list[dict]:
    report = status(folder, env)
    assert report["status"] == "FINISHED", report
    jobs = report["jobs"]
    assert len(jobs) == n and all(j["status"] == "FINISHED" for j in jobs), jobs
    for j in jobs:
        assert j["score"] == pytest.approx(rosen(j["config"]["x"], j["config"]["y"]), rel=1e-6, abs=1e-6)
    return jobs


def assert_local_job_files(folder: Path, jobs: list[dict]) -> None:
    """Configs and logs of every job, here in jobs/ beside the script (as Auptimizer keeps them)."""
    for j in jobs:
        assert json.loads((folder / "jobs" / f"{j['jid']}.json").read_text())["x"] == j["config"]["x"]
        assert "#Auptimizer:" in (folder / "jobs" / f"{j['jid']}.1.out").read_text()


# -- nodes whose home is their own ---------------------------------------------------------------


def own_home_node(factory, home: Path):
    """An sshd node whose sessions start in `home` and whose SFTP sees `home` as the home folder
    (`~` there is not this process's ~): a node with a file system of its own, as far as paths
    relative to the home go."""
    if not SFTP_SERVER.exists():
        pytest.skip(f"needs OpenSSH's sftp-server at {SFTP_SERVER}")
    home.mkdir(parents=True)
    force = home.parent / f"{home.name}.force.sh"
    force.write_text(
        'case "$SSH_ORIGINAL_COMMAND" in\n'
        f"  internal-sftp) exec {SFTP_SERVER} -d {home} ;;\n"
        "esac\n"
        f"cd {home} || exit 1\n"
        'exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n'
    )
    return factory.new(extra_config=[f"ForceCommand /bin/sh {force}"])


def local_home(tmp_path: Path, servers) -> Path:
    """This side's $HOME for the run: its ~/.ssh/known_hosts lists the nodes (the experiment
    files set no known_hosts, so the default one is used, as with OpenSSH)."""
    home = tmp_path / "local-home"
    (home / ".ssh").mkdir(parents=True)
    servers[0].factory.write_known_hosts(home / ".ssh" / "known_hosts", servers)
    return home


def fill_placeholders(path: Path, values: list[str]) -> None:
    """Replace the file's placeholder lines, one for one, with `values`."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert len(lines) == len(values)
    path.write_text("".join(v + "\n" for v in values))


def assert_node_files(wd: Path, jobs: list[dict]) -> None:
    """The node's side: the script copied into workingdir and made executable, each job's
    config in workingdir/jobs and its log there."""
    script = wd / "rosenbrock_hpo.py"
    assert script.read_text() == (EXAMPLES / "rosenbrock_hpo.py").read_text()
    assert script.stat().st_mode & stat.S_IXUSR
    for j in jobs:
        assert json.loads((wd / "jobs" / f"{j['jid']}.json").read_text())["y"] == j["config"]["y"]
        assert "#Auptimizer:" in (wd / "jobs" / f"{j['jid']}.1.remote.out").read_text()


# -- the experiments -------------------------------------------------------------------------------


def test_exp_cpu_runs_unchanged(tmp_path):
    folder = example(tmp_path)
    assert aup(folder, "init", "--cpu", "2").returncode == 0
    out = aup(folder, "run", "--headless", "exp_cpu.json")
    assert out.returncode == 0, out.stderr
    jobs = assert_all_finished(folder, 10)
    assert_local_job_files(folder, jobs)


def test_exp_gpu_runs_unchanged(tmp_path):
    folder = example(tmp_path)
    assert aup(folder, "init", "--gpu", "gpu.txt").returncode == 0  # cards 0 and 1, Auptimizer's list
    out = aup(folder, "run", "--headless", "exp_gpu.json")
    assert out.returncode == 0, out.stderr
    jobs = assert_all_finished(folder, 10)
    assert {j["resource"] for j in jobs} <= {"gpu:0", "gpu:1"}
    assert_local_job_files(folder, jobs)


def test_exp_passive_runs_unchanged_with_answers_through_the_store(tmp_path):
    from aup_tui_backends.store import TinyDBConnector

    folder = example(tmp_path)
    assert aup(folder, "init", "--passive").returncode == 0
    full = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "aup_tui.cli", "run", "--headless", "exp_passive.json"],
        cwd=folder,
        env=full,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    person = TinyDBConnector(str(folder / ".aup"))
    answered: set[int] = set()
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                report = status(folder)
            except AssertionError:  # no experiment yet
                time.sleep(0.1)
                continue
            for j in report["jobs"]:
                if j["status"] == "WAITING" and j["jid"] not in answered:
                    # the person runs the job as the example's README says, and pastes its output
                    run = subprocess.run(
                        ["./rosenbrock_hpo.py", f"./jobs/{j['jid']}.json"],
                        cwd=folder,
                        capture_output=True,
                        text=True,
                        timeout=30,
                        check=False,
                    )
                    assert run.returncode == 0, run.stderr
                    person.submit_passive(report["eid"], j["jid"], run.stdout)
                    answered.add(j["jid"])
            time.sleep(0.1)
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        person.close()
    assert len(answered) == 5
    assert_all_finished(folder, 5)


@pytest.mark.parametrize(
    "name, workingdir",
    [
        ("exp_node.json", "~/aup_demo"),  # the node's home, not this side's
        ("exp_node_async.json", None),  # an absolute folder that exists nowhere yet
    ],
    ids=["node", "node_async"],
)
def test_exp_node_runs_unchanged_on_nodes_with_a_workingdir_absent_here(
    sshd_factory, tmp_path, name, workingdir
):
    folder = example(tmp_path)
    servers = [own_home_node(sshd_factory, tmp_path / f"node{i}-home") for i in (1, 2)]
    try:
        home = local_home(tmp_path, servers)
        env = {"HOME": str(home)}
        fill_placeholders(folder / "node.txt", [s.mapping_value() for s in servers])
        out = aup(folder, "init", "--node", "node.txt", env=env)
        assert out.returncode == 0, out.stderr
        absolute = tmp_path / "not-here-before" / "aup_demo"
        original = set_workingdir(folder / name, workingdir or str(absolute))
        assert original["runtime_args"]["overwrite"] is True and original["n_parallel"] == 2
        out = aup(folder, "run", "--headless", name, env=env)
        assert out.returncode == 0, out.stderr
        jobs = assert_all_finished(folder, 10, env)
        assert_local_job_files(folder, jobs)
        for j in jobs:  # prescript `export CUDA_VISIBLE_DEVICES=-1`, postscript `echo $CUDA_VISIBLE_DEVICES`
            assert (folder / "jobs" / f"{j['jid']}.1.out").read_text().splitlines()[-1] == "-1"
        if workingdir:
            used = [
                s
                for s in (tmp_path / "node1-home" / "aup_demo", tmp_path / "node2-home" / "aup_demo")
                if s.exists()
            ]
            assert used, "nothing arrived in ~/aup_demo on the nodes"
            ran_on = {wd: [j for j in jobs if (wd / "jobs" / f"{j['jid']}.json").exists()] for wd in used}
            assert sum(len(v) for v in ran_on.values()) == len(jobs)
            for wd, on_it in ran_on.items():
                assert_node_files(wd, on_it)
            assert not (home / "aup_demo").exists(), "~ was taken as this side's home"
        else:
            assert_node_files(absolute, jobs)
    finally:
        for s in servers:
            s.kill()


def test_exp_aws_runs_unchanged_on_moto_instances(sshd_factory, moto_url, tmp_path):
    import boto3

    folder = example(tmp_path)
    homes = [tmp_path / f"instance{i}-home" for i in (1, 2)]
    servers = [own_home_node(sshd_factory, h) for h in homes]
    try:
        ec2 = boto3.client("ec2", endpoint_url=moto_url, region_name=REGION)
        iids = [new_instance(ec2) for _ in servers]  # stopped: the run starts them
        for h in homes:  # the example's prescript is `source .profile` (in the instance's home)
            (h / ".profile").write_text("echo sourced >> profile.log\n")
        home = local_home(tmp_path, servers)
        key = str(servers[0].factory.client_key)
        user = servers[0].mapping_value().split("@")[0]
        fill_placeholders(folder / "aws.txt", [f"{user}@{iid} {key}" for iid in iids])
        # the experiment names no endpoint, region or address: they come from the environment
        env = {
            "HOME": str(home),
            **FAKE_ENV,
            "AWS_ENDPOINT_URL": moto_url,
            "AUP_AWS_ADDRESS_OVERRIDE": json.dumps({i: f"127.0.0.1:{s.port}" for i, s in zip(iids, servers)}),
        }
        out = aup(folder, "init", "--aws", "aws.txt", env=env)
        assert out.returncode == 0, out.stderr
        set_workingdir(folder / "exp_aws.json", "~")  # was /home/ubuntu/: the instance's home
        out = aup(folder, "run", "--headless", "exp_aws.json", env=env)
        assert out.returncode == 0, out.stderr
        jobs = assert_all_finished(folder, 10, env)
        assert_local_job_files(folder, jobs)
        for j in jobs:  # postscript `echo 'DONE'`
            assert (folder / "jobs" / f"{j['jid']}.1.out").read_text().splitlines()[-1] == "DONE"
        logs = [h / "profile.log" for h in homes if (h / "profile.log").exists()]
        assert sum(p.read_text().count("sourced") for p in logs) == 10
        placed = 0
        for h in homes:
            on_it = [j for j in jobs if (h / "jobs" / f"{j['jid']}.json").exists()]
            placed += len(on_it)
            if on_it:
                assert_node_files(h, on_it)
        assert placed == 10
        assert [state_of(ec2, iid) for iid in iids] == ["stopped", "stopped"]  # "shutdown": true
    finally:
        for s in servers:
            s.kill()
