"""A real Ray cluster for tests, on loopback only: a network namespace with just `lo` up (Ray binds
to the machine's interface address otherwise, and ignores --node-ip-address 127.0.0.1), a head
node and a worker node started by `ray start` inside it, and the CLI run inside it too.

Ray's processes are ended by killing every process in the namespace (never `ray stop`, which
ends every Ray process on the machine). Tests skip, saying why, where Ray is not installed or
no namespace can be made.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import ROOT

#: quiet, offline, token auth off: for the Ray processes and drivers the tests start
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DISABLE_IMPORT_WARNING": "1",
    "RAY_BACKEND_LOG_LEVEL": "error",
    "PYTHONPATH": str(ROOT),
}
HEAD_PORT = 6379


def ray_cli() -> str | None:
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else shutil.which("ray")


class NetNamespace:
    """A network namespace with only `lo` up, held by a sleeping process; commands run in it
    through `nsenter` (as root), or in a user namespace of their own (`unshare -rn`) otherwise."""

    def __init__(self, **env: str) -> None:
        self.extra_env = env  # for every command run in it
        self.user_ns = os.geteuid() != 0
        flags = "-rn" if self.user_ns else "-n"
        self.holder = subprocess.Popen(
            ["unshare", flags, "--", "sh", "-c", "ip link set lo up && echo ready && exec sleep 100000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()
        if line.strip() != "ready":
            err = self.holder.stderr.read() if self.holder.stderr else ""
            self.holder.kill()
            self.holder.wait()
            raise OSError(f"cannot make a network namespace: {' '.join(err.split()) or 'unshare failed'}")
        self.netns = os.readlink(f"/proc/{self.holder.pid}/ns/net")

    def prefix(self) -> list[str]:
        extra = ["-U", "--preserve-credentials"] if self.user_ns else []
        return ["nsenter", "-t", str(self.holder.pid), "-n", *extra, "--"]

    def env(self, **more: str) -> dict[str, str]:
        return dict(os.environ, **RAY_ENV, **self.extra_env, **more)

    def run(
        self, argv: list[str], cwd: Path | str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.prefix() + argv, cwd=cwd, env=self.env(), capture_output=True, text=True, timeout=timeout
        )

    def popen(self, argv: list[str], cwd: Path | str | None = None, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.prefix() + argv, cwd=cwd, env=self.env(), text=True, **kw)

    def cli(self, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.run([sys.executable, "-m", "aup_tui.cli", *args], cwd=cwd, timeout=timeout)

    def cli_popen(self, *args: str, cwd: Path, **kw) -> subprocess.Popen:
        return self.popen([sys.executable, "-m", "aup_tui.cli", *args], cwd=cwd, **kw)

    def pids(self) -> list[int]:
        """Every process in this namespace (ours: started in it), the holder too."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/ns/net") == self.netns:
                        found.append(int(entry))
                except OSError:
                    pass
        return found

    def close(self) -> None:
        """Kill every process in the namespace (Ray's daemons too), the holder last."""
        for _ in range(3):
            pids = [p for p in self.pids() if p != self.holder.pid]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.2)
        self.holder.kill()
        self.holder.wait()


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


class RayCluster:
    """A head node (no CPUs: it runs no job and is never killed) and worker nodes, in a namespace."""

    def __init__(self, ns: NetNamespace, temp: str) -> None:
        self.ns = ns
        self.temp = temp
        self.address = f"127.0.0.1:{HEAD_PORT}"

    def raylets(self) -> set[int]:
        return {p for p in self.ns.pids() if process_name(p) == "raylet"}

    def start_head(self) -> None:
        self._ray_start(
            "--head",
            f"--port={HEAD_PORT}",
            "--num-cpus=0",
            "--include-dashboard=false",
            f"--temp-dir={self.temp}",
        )

    def add_worker(self, num_cpus: int, num_gpus: int = 0) -> int:
        """Start a worker node (`num_gpus`: GPUs Ray hands out by id, none needed); returns its
        raylet's pid."""
        before = self.raylets()
        self._ray_start(f"--address={self.address}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}")
        new = self.raylets() - before
        assert len(new) == 1, new
        return new.pop()

    def _ray_start(self, *args: str) -> None:
        cli = ray_cli()
        assert cli is not None
        done = self.ns.run([cli, "start", "--disable-usage-stats", *args], timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def start_cluster(workers: int = 1, cpus: int = 2, gpus: int = 0) -> RayCluster:
    """A namespace with a Ray head and `workers` worker nodes; pytest.skip with the reason when
    Ray is missing or a namespace cannot be made."""
    if ray_cli() is None:
        pytest.skip("Ray is not installed (pip install 'aup-tui[ray]')")
    if shutil.which("unshare") is None or shutil.which("nsenter") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare, nsenter and ip (util-linux, iproute2) for a loopback-only namespace")
    try:
        ns = NetNamespace()
    except OSError as exc:
        pytest.skip(str(exc))
    temp = tempfile.mkdtemp(prefix="aupray", dir="/tmp")  # short: Ray's socket paths must fit
    cluster = RayCluster(ns, temp)
    try:
        cluster.start_head()
        for _ in range(workers):
            cluster.add_worker(cpus, gpus)
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def stop_cluster(cluster: RayCluster) -> None:
    cluster.ns.close()
    shutil.rmtree(cluster.temp, ignore_errors=True)
