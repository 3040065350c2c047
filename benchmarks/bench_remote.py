"""Per-job overhead of running jobs on an SSH node vs. the local CPU manager, in the same run.

The node is a real OpenSSH sshd on 127.0.0.1 (tests/sshd.py), so the network costs nothing and
what is measured is the manager's own work per job: the SFTP upload of the config, the exec
channel, sshd forking the session and the wrapper shell, streaming the output back. Each set-up
runs the same experiment of trivial jobs (`echo "#Auptimizer:1"`) one at a time through the
real experiment loop and store:

* cpu        the local CPU manager: the floor, measured in the same run;
* node       the SSH manager with its pooled connection (reused for every job);
* node-new   the SSH manager opening a new connection per job, as Auptimizer did.

It prints the time per job of each, the extra time per job over the floor, and whether the
pooled node stays within the target (at most 30 ms extra per job); the exit status is 1 when it
does not.

    python benchmarks/bench_remote.py [N_JOBS]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from aup_tui_backends import Experiment  # noqa: E402
from aup_tui_backends.config import validate_experiment  # noqa: E402
from aup_tui_backends.setup import init_aup  # noqa: E402
from sshd import SshdFactory  # noqa: E402

TARGET_MS = 30.0
REPEATS = 3


def experiment(folder: Path, resource: str, n: int, **resource_args):
    data = {
        "name": f"bench-{resource}",
        "script": "./job.sh",
        "workingdir": str(folder),
        "resource": resource,
        "n_parallel": 1,
        "n_samples": n,
        "target": "max",
        "proposer": "random",
        "random_seed": 1,
        "parameter_config": [{"name": "x", "range": [0, 1], "type": "float"}],
        "resource_args": resource_args,
    }
    return validate_experiment(data, base_dir=str(folder))


def per_job(folder: Path, resource: str, n: int, **resource_args) -> float:
    """Seconds per job of an n-job experiment (best of REPEATS)."""
    times = []
    for _ in range(REPEATS):
        exp = Experiment(experiment(folder, resource, n, **resource_args), auppath=str(folder / ".aup"))
        start = time.perf_counter()
        result = exp.run()
        elapsed = time.perf_counter() - start
        exp.connector.close()
        if result.status != "FINISHED" or result.counts.get("FINISHED") != n:
            raise SystemExit(
                f"{resource} {resource_args}: the experiment ended {result.status} {result.counts}"
            )
        times.append(elapsed / n)
    return min(times)


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "sshd").mkdir()
        factory = SshdFactory(tmp_path / "sshd")
        try:
            server = factory.new()
            folder = tmp_path / "work"
            folder.mkdir()
            init_aup(str(folder / ".aup"), cpu=1, node=[server.mapping_value()])
            known_hosts = factory.write_known_hosts(folder / "known_hosts", [server])
            script = folder / "job.sh"
            script.write_text('#!/bin/sh\necho "#Auptimizer:1"\n')
            script.chmod(0o755)
            node_args = {"known_hosts": known_hosts, "reconn_wait_time": 1, "max_retries": 1}
            per_job(folder, "cpu", 3)  # warm up imports and the store
            per_job(folder, "node", 3, **node_args)
            cpu = per_job(folder, "cpu", n)
            node = per_job(folder, "node", n, **node_args)
            node_new = per_job(folder, "node", n, reuse_connections=False, **node_args)
        finally:
            factory.close()
    extra, extra_new = (node - cpu) * 1000, (node_new - cpu) * 1000
    print(f"{n} trivial jobs, one at a time, best of {REPEATS} ({os.cpu_count()} CPUs)")
    print(f"  cpu (floor)           {cpu * 1000:8.1f} ms/job")
    print(
        f"  node, pooled conn     {node * 1000:8.1f} ms/job   extra {extra:6.1f} ms/job   "
        f"ratio {node / cpu:5.2f}x the floor"
    )
    print(
        f"  node, new conn/job    {node_new * 1000:8.1f} ms/job   extra {extra_new:6.1f} ms/job   "
        f"ratio {node_new / cpu:5.2f}x the floor"
    )
    print(f"  reuse saves           {(node_new - node) * 1000:8.1f} ms/job")
    ok = extra <= TARGET_MS
    print(f"target: at most {TARGET_MS:.0f} ms extra per job with reuse — {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
