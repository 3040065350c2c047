"""Dispatch overhead: trivial jobs, n_parallel 2, against `xargs -P 2` running the same script.

For 1,000 and 200 jobs: the floor (xargs) and the whole `aup-tui run --headless` command, and
their ratio; for 2 jobs the fixed cost (the command's time over the floor's). With `--engine`,
also `Experiment.run` in this process (store_sync batch and job). Measures take turns within each
round, so a busy spell on a shared machine weighs on the floor and on us alike; medians (and
the best) over the rounds. Targets: ≤ 1.3× at 1,000 jobs, ≤ 1.5× at 200, fixed cost ≤ 0.06 s.

    python benchmarks/bench_dispatch.py [--sizes 1000,200,2] [--rounds 5] [--engine]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
    path = os.path.join(folder, f"experiment-{n_jobs}.json")
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
    connector = TinyDBConnector(auppath, sync=sync)
    start = time.perf_counter()
    result = Experiment(config, auppath=auppath, connector=connector).run()
    connector.close()
    elapsed = time.perf_counter() - start
    assert result.status == "FINISHED" and result.counts.get("FINISHED") == config.n_samples, result
    return elapsed


def command_env() -> dict[str, str]:
    """The environment the command runs in: this checkout first on the path; and, unless
    `--as-is`, compiled modules cached (in a temporary folder) as an installed wheel has them,
    even where PYTHONDONTWRITEBYTECODE is set (it makes every start compile every module)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    if PYCACHE:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = PYCACHE
    return env


PYCACHE = ""


def interpreter(env: dict[str, str]) -> float:
    """A bare interpreter start (`python -c pass`): the part of the fixed cost that is not ours."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - start


def whole_command(folder: str, exp_path: str) -> float:
    env = command_env()
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


def _stats(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} s (best {min(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,200,2", help="job counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--engine", action="store_true", help="also time Experiment.run in this process")
    parser.add_argument(
        "--as-is", action="store_true", help="keep PYTHONDONTWRITEBYTECODE (no compiled-module cache)"
    )
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    runs: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        global PYCACHE
        PYCACHE = "" if args.as_is else os.path.join(folder, "pycache")
        paths = {n: setup(folder, n) for n in sizes}
        whole_command(folder, paths[min(sizes)])  # warm-up: compiles the modules into PYCACHE
        for _ in range(args.rounds):
            runs.setdefault(("python", 0), []).append(interpreter(command_env()))
            for n in sizes:
                runs.setdefault(("floor", n), []).append(floor(folder, n))
                runs.setdefault(("cli", n), []).append(whole_command(folder, paths[n]))
                if args.engine and n >= 100:
                    runs.setdefault(("batch", n), []).append(in_process(folder, paths[n]))
                    runs.setdefault(("job", n), []).append(in_process(folder, paths[n], sync="job"))
    for n in sizes:
        base, cli = runs[("floor", n)], runs[("cli", n)]
        # the ratio of each round's pair, so that both sides of one ratio saw the same machine
        ratios = [c / b for c, b in zip(cli, base)]
        over = [(c - b) for c, b in zip(cli, base)]
        print(f"{n:>5} jobs  floor xargs -P 2:              {_stats(base)}")
        print(f"{n:>5} jobs  aup-tui run --headless:        {_stats(cli)}")
        if n <= 10:
            print(f"{n:>5} jobs  fixed cost (command − floor):  median {statistics.median(over):.3f} s")
            print(f"         of which `python -c pass`:     {_stats(runs[('python', 0)])}")
        else:
            print(
                f"{n:>5} jobs  ratio median {statistics.median(ratios):.2f}x (best {min(ratios):.2f}x), "
                f"{statistics.median(over) / n * 1000:.2f} ms/job over the floor"
            )
        for kind in ("batch", "job"):
            if (kind, n) in runs:
                t = runs[(kind, n)]
                r = statistics.median(a / b for a, b in zip(t, base))
                print(f"{n:>5} jobs  engine Experiment.run (store_sync={kind}): {_stats(t)}  ratio {r:.2f}x")


if __name__ == "__main__":
    main()
