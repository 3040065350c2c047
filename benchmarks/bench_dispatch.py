"""Dispatch overhead: 1,000 trivial jobs, n_parallel 2, against `xargs -P 2` running the same script.

Prints the floor (xargs), our in-process experiment time, the whole `aup-tui run --headless`
command, and their ratios. Target: ≤ 2× the floor (aim 1.3×).

    python benchmarks/bench_dispatch.py [--jobs 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def setup(folder: str, n_jobs: int) -> str:
    script = os.path.join(folder, "trivial.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\necho '#Auptimizer:1'\n")
    os.chmod(script, 0o755)
    exp = {
        "name": "dispatch-bench",
        "script": "./trivial.sh",
        "workingdir": folder,
        "resource": "cpu",
        "n_parallel": 2,
        "n_samples": n_jobs,
        "target": "max",
        "proposer": "random",
        "parameter_config": [{"name": "x", "range": [0, 1], "type": "float"}],
    }
    path = os.path.join(folder, "experiment.json")
    with open(path, "w") as f:
        json.dump(exp, f)
    return path


def floor(folder: str, n_jobs: int) -> float:
    start = time.perf_counter()
    subprocess.run(
        f"seq {n_jobs} | xargs -P 2 -I{{}} ./trivial.sh {{}} > /dev/null", shell=True, cwd=folder, check=True
    )
    return time.perf_counter() - start


def in_process(folder: str, exp_path: str, sync: str = "batch") -> float:
    from aup_tui_backends.config import load_experiment
    from aup_tui_backends.experiment import Experiment
    from aup_tui_backends.setup import init_aup
    from aup_tui_backends.store import TinyDBConnector

    auppath = os.path.join(folder, ".aup")
    init_aup(auppath, cpu=2, overwrite=True)
    config = load_experiment(exp_path)
    start = time.perf_counter()
    result = Experiment(config, auppath=auppath, connector=TinyDBConnector(auppath, sync=sync)).run()
    elapsed = time.perf_counter() - start
    assert result.status == "FINISHED" and result.counts.get("FINISHED") == config.n_samples, result
    return elapsed


def whole_command(folder: str, exp_path: str) -> float:
    env = dict(os.environ, PYTHONPATH=ROOT)
    subprocess.run(
        [sys.executable, "-m", "aup_tui.cli", "init", "--cpu", "2", "--overwrite"],
        cwd=folder,
        env=env,
        check=True,
        capture_output=True,
    )
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "aup_tui.cli", "run", "--headless", exp_path],
        cwd=folder,
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        exp_path = setup(folder, args.jobs)
        # best of `--rounds` for every measure, the floor included; the measures take turns within
        # each round, so a busy spell on the machine weighs on the floor and on us alike
        runs: dict[str, list[float]] = {"base": [], "ours": [], "each": [], "cli": []}
        for _ in range(args.rounds):
            runs["base"].append(floor(folder, args.jobs))
            runs["ours"].append(in_process(folder, exp_path))
            runs["each"].append(in_process(folder, exp_path, sync="job"))
            runs["cli"].append(whole_command(folder, exp_path))
        base, ours, each, cli = (min(runs[k]) for k in ("base", "ours", "each", "cli"))
    print(f"floor  xargs -P 2, {args.jobs} jobs:                 {base:.3f} s")
    print(
        f"engine Experiment.run (store_sync=batch):        {ours:.3f} s  ratio {ours / base:.2f}x  "
        f"({(ours - base) / args.jobs * 1000:.2f} ms/job over the floor)"
    )
    print(f"engine Experiment.run (store_sync=job, fsync/job): {each:.3f} s  ratio {each / base:.2f}x")
    print(f"cli    aup-tui run --headless (whole command):   {cli:.3f} s  ratio {cli / base:.2f}x")


if __name__ == "__main__":
    main()
