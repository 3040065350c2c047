"""Store cost must not grow with history.

1. 100,000 intermediate results (100 jobs × 1,000), flushed every 1,000: ms per result over the
   first 1,000 and the last 1,000 (the floor is the first block; the ratio must stay under 2×).
2. A long experiment: 10,000 jobs × 100 intermediate results, start → results → end per job:
   ms per job over the first 1,000 jobs and over the last 1,000.

    python benchmarks/bench_store.py [--jobs 10000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aup_tui_backends.store import TinyDBConnector  # noqa: E402


def results_benchmark(folder: str) -> tuple[float, float]:
    c = TinyDBConnector(os.path.join(folder, "r", ".aup"))
    eid = c.start_experiment("bench", "results", {})
    blocks = []
    for _block in range(100):
        jid = c.new_jid()
        start = time.perf_counter()
        for i in range(1000):
            c.save_intermediate_result(eid, jid, i, [i * 0.001, 1.0])
        c.flush()
        blocks.append((time.perf_counter() - start) / 1000 * 1000)
    c.close()
    return blocks[0], blocks[-1]


def jobs_benchmark(folder: str, n_jobs: int) -> tuple[float, float]:
    c = TinyDBConnector(os.path.join(folder, "j", ".aup"))
    eid = c.start_experiment("bench", "long", {})
    rid = c.add_resource("cpu0", "cpu")
    times = []
    for n in range(n_jobs):
        start = time.perf_counter()
        jid = c.new_jid()
        c.take_available_resource(rid, jid)
        c.start_job(eid, jid, {"x": n * 0.5, "y": "abc"}, rid, "cpu:cpu0", 1)
        for i in range(100):
            c.save_intermediate_result(eid, jid, i, [i * 0.01])
        c.end_job(eid, jid, 1.0, "FINISHED", values=[1.0])
        c.free_used_resource(rid)
        if n % 10 == 9:
            c.flush()  # as the background flusher would, twice a second
        times.append(time.perf_counter() - start)
    c.close()
    block = min(1000, n_jobs // 10)
    return sum(times[:block]) / block * 1000, sum(times[-block:]) / block * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        first, last = results_benchmark(folder)
        print(
            f"100,000 intermediate results: first 1,000 {first:.4f} ms/result, "
            f"last 1,000 {last:.4f} ms/result, ratio {last / first:.2f}x (must be < 2x)"
        )
        first, last = jobs_benchmark(folder, args.jobs)
        print(
            f"{args.jobs:,} jobs × 100 results: first jobs {first:.3f} ms/job, last jobs {last:.3f} ms/job, "
            f"ratio {last / first:.2f}x"
        )


if __name__ == "__main__":
    main()
