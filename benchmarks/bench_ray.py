"""Dispatch on Ray: trivial jobs, 2 at a time, on a local Ray — the Ray manager (`Experiment.run`
with `resource: "ray"`) against Ray's bare task running the same script (all submitted at once,
Ray running 2 at a time; and "2x1": two slots, each submitting its next task when its last one
ended, as n_parallel 2 dispatches), the local CPU manager and `xargs -P 2`, in one run. Target:
the Ray manager within 1.5× Ray's bare task time per job.

Runs in a network namespace with only `lo` up when it can make one (`unshare -n`), so that the
local Ray stays on loopback; it is started once (`ray.init`) and ended with `ray.shutdown()`.

    python benchmarks/bench_ray.py [--jobs 1000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
QUIET = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_BACKEND_LOG_LEVEL": "error"}


def in_namespace() -> None:
    """Re-run this script in a loopback-only network namespace, when one can be made."""
    if os.environ.get("AUP_BENCH_NETNS") or shutil.which("unshare") is None or shutil.which("ip") is None:
        return
    flags = "-n" if os.geteuid() == 0 else "-rn"
    argv = [sys.executable, *sys.argv]
    env = dict(os.environ, AUP_BENCH_NETNS="1", **QUIET)
    probe = subprocess.run(["unshare", flags, "true"], capture_output=True)
    if probe.returncode != 0:
        print("(no network namespace could be made: Ray runs on this machine's address)")
        return
    code = subprocess.call(
        ["unshare", flags, "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv], env=env
    )
    sys.exit(code)


def experiment(folder: str, n_jobs: int, resource: str) -> str:
    exp = {
        "name": f"bench-{resource}",
        "script": "./trivial.sh",
        "workingdir": folder,
        "resource": resource,
        "n_parallel": 2,
        "n_samples": n_jobs,
        "target": "max",
        "proposer": "random",
        "parameter_config": [{"name": "x", "range": [0, 1], "type": "float"}],
    }
    path = os.path.join(folder, f"experiment-{resource}-{n_jobs}.json")
    with open(path, "w") as f:
        json.dump(exp, f)
    return path


def engine(folder: str, exp_path: str) -> float:
    from aup_tui_backends.config import load_experiment
    from aup_tui_backends.experiment import Experiment
    from aup_tui_backends.store import TinyDBConnector

    auppath = os.path.join(folder, ".aup")
    config = load_experiment(exp_path)
    connector = TinyDBConnector(auppath)
    start = time.perf_counter()
    result = Experiment(config, auppath=auppath, connector=connector).run()
    elapsed = time.perf_counter() - start
    connector.close()
    assert result.status == "FINISHED" and result.counts.get("FINISHED") == config.n_samples, result
    return elapsed


def bare_ray(folder: str, n_jobs: int) -> float:
    import ray

    script = os.path.join(folder, "trivial.sh")

    @ray.remote(num_cpus=1)
    def job(i: int) -> int:
        return subprocess.run([script, str(i)], stdout=subprocess.DEVNULL).returncode

    ray.get([job.remote(i) for i in range(4)])  # workers started
    start = time.perf_counter()
    codes = ray.get([job.remote(i) for i in range(n_jobs)])
    elapsed = time.perf_counter() - start
    assert not any(codes)
    return elapsed


def bare_ray_slots(folder: str, n_jobs: int, slots: int = 2) -> float:
    """Ray's bare task as the experiment loop dispatches: `slots` at a time, each slot's next
    task submitted when its last one ended (what n_parallel 2 does)."""
    import threading

    import ray

    script = os.path.join(folder, "trivial.sh")

    @ray.remote(num_cpus=1)
    def job(i: int) -> int:
        return subprocess.run([script, str(i)], stdout=subprocess.DEVNULL).returncode

    def slot(count: int) -> None:
        for i in range(count):
            assert ray.get(job.remote(i)) == 0

    threads = [threading.Thread(target=slot, args=(n_jobs // slots,)) for _ in range(slots)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def xargs(folder: str, n_jobs: int) -> float:
    start = time.perf_counter()
    subprocess.run(
        f"seq {n_jobs} | xargs -P 2 -I{{}} ./trivial.sh {{}} > /dev/null", shell=True, cwd=folder, check=True
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    in_namespace()
    os.environ.update({k: os.environ.get(k, v) for k, v in QUIET.items()})
    import logging

    import ray
    from aup_tui_backends.setup import init_aup

    folder = tempfile.mkdtemp(prefix="aup-bench-ray-")
    script = os.path.join(folder, "trivial.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\necho '#Auptimizer:1'\n")
    os.chmod(script, 0o755)
    init_aup(os.path.join(folder, ".aup"), cpu=2, ray="")
    ray_exp, cpu_exp = experiment(folder, args.jobs, "ray"), experiment(folder, args.jobs, "cpu")
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    print(f"local Ray ready in {time.perf_counter() - start:.2f} s")
    engine(folder, experiment(folder, 10, "ray"))  # the manager's first task: its function exported
    times: dict[str, list[float]] = {
        "ray bare": [],
        "ray bare 2x1": [],
        "ray manager": [],
        "cpu manager": [],
        "xargs -P 2": [],
    }
    try:
        for _ in range(args.rounds):  # measures take turns: a busy spell weighs on all of them
            times["ray bare"].append(bare_ray(folder, args.jobs))
            times["ray bare 2x1"].append(bare_ray_slots(folder, args.jobs))
            times["ray manager"].append(engine(folder, ray_exp))
            times["cpu manager"].append(engine(folder, cpu_exp))
            times["xargs -P 2"].append(xargs(folder, args.jobs))
    finally:
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.jobs} trivial jobs, 2 at a time (median of {args.rounds}):")
    for name, t in med.items():
        print(f"  {name:<12} {t:7.3f} s  {t / args.jobs * 1000:6.2f} ms/job")
    ratio = med["ray manager"] / med["ray bare"]
    print(f"ray manager / ray bare task: {ratio:.2f}x (target <= 1.5x) {'OK' if ratio <= 1.5 else 'OVER'}")
    print(
        f"ray manager / ray bare task, 2 slots one after another: {med['ray manager'] / med['ray bare 2x1']:.2f}x"
    )
    print(f"cpu manager / xargs -P 2:    {med['cpu manager'] / med['xargs -P 2']:.2f}x")
    print(f"ray manager / cpu manager:   {med['ray manager'] / med['cpu manager']:.2f}x")


if __name__ == "__main__":
    main()
