"""Commands must not read or rebuild more than they show.

1. `aup-tui status --json` at the end of a 10,000-job experiment, against `aup-tui --help`
   (the floor: Python, argparse and our imports, measured in the same run). Target: under 3×.
2. A command's start-up with 16,000 cpu resources in env.ini, against the same with 2
   (`aup-tui status` on a one-job experiment). Target: under 1.5× (independent of resources).
3. Journals left uncompacted after a run (target: 0), and the end of a 10,000-job run.

    python benchmarks/bench_status.py [--jobs 10000] [--cpus 16000]
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from aup_tui_backends.store import TinyDBConnector  # noqa: E402  (after the path set-up)

#: as installed: byte-compiled modules (cached outside the tree), not recompiled on every call
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
_ENV.update(PYTHONPATH=ROOT, PYTHONPYCACHEPREFIX=os.path.join(tempfile.gettempdir(), "aup-bench-pycache"))


def _cli(*args: str, cwd: str) -> float:
    env = _ENV
    start = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "aup_tui.cli", *args], cwd=cwd, env=env, capture_output=True, check=False
    )
    took = time.perf_counter() - start
    if res.returncode not in (0, 1):
        raise SystemExit(f"aup-tui {' '.join(args)} failed: {res.stderr.decode()[-500:]}")
    return took


def best_of(n: int, *args: str, cwd: str) -> float:
    return min(_cli(*args, cwd=cwd) for _ in range(n))


def _fill(auppath: str, n_jobs: int) -> float:
    """A finished experiment of `n_jobs` jobs written as a run writes it; returns the close time."""
    c = TinyDBConnector(auppath)
    rid = c.resources("cpu")[0]["rid"]
    eid = c.start_experiment(
        "bench", "big", {"name": "big"}, n_samples=n_jobs, target="max", resource="cpu", workingdir=auppath
    )
    for n in range(n_jobs):
        jid = c.new_jid()
        c.take_available_resource(rid, jid)
        c.start_job(eid, jid, {"x": n * 0.5, "y": "abc"}, rid, "cpu:cpu0", 1)
        c.save_intermediate_result(eid, jid, 0, [n * 0.001])
        c.end_job(eid, jid, n * 0.001, "FINISHED", values=[n * 0.001])
        c.free_used_resource(rid)
        if n % 10 == 9:
            c.flush()
    best = c.get_best_result(eid, True)
    c.end_experiment(eid, "FINISHED", best_jid=best[0], best_score=best[1])
    start = time.perf_counter()
    c.close()
    return time.perf_counter() - start


def _init(folder: str, cpus: int) -> str:
    from aup_tui_backends.setup import init_aup

    os.makedirs(folder)
    init_aup(os.path.join(folder, ".aup"), cpu=cpus)
    return os.path.join(folder, ".aup")


def _uncompacted(auppath: str) -> int:
    return sum(
        1
        for p in glob.glob(os.path.join(auppath, "store", "**", "*.log"), recursive=True)
        if os.path.getsize(p) > 0
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--cpus", type=int, default=16000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        _cli("status", cwd=tmp)  # byte-compiles every module once
        floor = best_of(args.repeat, "--help", cwd=tmp)
        print(f"floor: aup-tui --help                        {floor * 1000:7.0f} ms")

        big = os.path.join(tmp, "big")
        aup = _init(big, 2)
        close_s = _fill(aup, args.jobs)
        left = _uncompacted(aup)
        status = best_of(args.repeat, "status", "--json", cwd=big)
        print(
            f"status --json at {args.jobs} jobs               {status * 1000:7.0f} ms   "
            f"{status / floor:4.2f}x the floor (target < 3x)"
        )
        print(
            f"closing the store after {args.jobs} jobs        {close_s * 1000:7.0f} ms; "
            f"journals left uncompacted: {left} (target 0)"
        )

        small = os.path.join(tmp, "small")
        many = os.path.join(tmp, "many")
        t0 = time.perf_counter()
        for folder, cpus in ((small, 2), (many, args.cpus)):
            _fill(_init(folder, cpus), 1)
        init_s = time.perf_counter() - t0
        few_s = best_of(args.repeat, "status", cwd=small)
        many_s = best_of(args.repeat, "status", cwd=many)
        print(f"aup-tui status, 2 cpu resources             {few_s * 1000:7.0f} ms")
        print(
            f"aup-tui status, {args.cpus} cpu resources        {many_s * 1000:7.0f} ms   "
            f"{many_s / few_s:4.2f}x the 2-resource time (target < 1.5x); init of both {init_s:.1f} s"
        )


if __name__ == "__main__":
    main()
