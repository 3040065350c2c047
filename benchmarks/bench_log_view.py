"""Memory of the job log view on a long log: `python benchmarks/bench_log_view.py`.

Opens the job detail on a running job whose log has 1,000, 100,000 and 1,000,000 lines, waits
until the last line is drawn, then follows the job writing a tenth as many lines again in ten
bursts. Prints the peak Python memory (tracemalloc, all threads: the reader and the app) of each
run and the ratio of the 1,000,000-line run to the 1,000-line one. The view holds at most
`MAX_LINES` lines and the reader takes at most `MAX_READ_BYTES` a read, so memory grows until the
log is that long and then stays flat: target 1,000,000 / 100,000 within 1.2× and
1,000,000 / 1,000 within 3×. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from aup_tui_backends.setup import init_aup  # noqa: E402
from aup_tui_backends.store import TinyDBConnector  # noqa: E402
from screens_support import Host, wait_until  # noqa: E402

from aup_tui.screens.job_detail import JobDetailScreen  # noqa: E402
from aup_tui.widgets.log_view import MAX_LINES, LogView  # noqa: E402

SIZES = (1_000, 100_000, 1_000_000)


def log_lines(start: int, count: int) -> str:
    """Lines as a training script prints them (about 60 bytes each)."""
    return "".join(
        f"epoch {i // 100:5d} step {i:7d} loss={1 / (i + 1):.6f} lr=0.001\n"
        for i in range(start, start + count)
    )


def running_job(folder: Path, lines: int) -> tuple[TinyDBConnector, int, int, Path]:
    init_aup(str(folder / ".aup"), cpu=1)
    conn = TinyDBConnector(str(folder / ".aup"))
    eid = conn.start_experiment("me", "bench", {}, workingdir=str(folder), target="min", resource="cpu")
    jid = conn.new_jid()
    conn.start_job(eid, jid, {"x": 1.0}, 1, "cpu:cpu0", 1)
    now = time.time()
    conn.update_job(eid, jid, attempts=[{"attempt": 1, "rid": 1, "resource": "cpu:cpu0", "start": now}])
    log = folder / "jobs" / f"{jid}.1.out"
    log.parent.mkdir(exist_ok=True)
    with open(log, "w") as f:
        for start in range(0, lines, 100_000):
            f.write(log_lines(start, min(100_000, lines - start)))
    return conn, eid, jid, log


async def measure(lines: int) -> tuple[float, float, int]:
    """(peak MiB, seconds until the last line is in the view, lines held) for a log of `lines` lines."""
    with tempfile.TemporaryDirectory() as tmp:
        conn, eid, jid, path = running_job(Path(tmp), lines)
        tracemalloc.start()
        try:
            t0 = time.perf_counter()
            app = Host(lambda: JobDetailScreen(conn, eid, jid, poll_interval=0.05))
            async with app.run_test(size=(100, 30)) as pilot:
                await wait_until(pilot, lambda: isinstance(app.screen, JobDetailScreen), timeout=30)
                log = app.screen.query_one("#detail-log", LogView)
                last = log_lines(lines - 1, 1).rstrip("\n")
                await wait_until(pilot, lambda last=last: log.lines[-2:-1] == [last], timeout=60)
                opened = time.perf_counter() - t0
                burst = max(1, lines // 100)
                for i in range(10):  # the job keeps writing: follow it
                    start = lines + i * burst
                    with open(path, "a") as f:
                        f.write(log_lines(start, burst))
                    last = log_lines(start + burst - 1, 1).rstrip("\n")
                    await wait_until(pilot, lambda last=last: log.lines[-2:-1] == [last], timeout=60)
                held = log.line_count
                assert log.total_lines == lines + 10 * burst, (log.total_lines, lines)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            conn.close()
    return peak / 2**20, opened, held


def main() -> int:
    peaks = {}
    print(f"log view: at most {MAX_LINES:,} lines held")
    for lines in SIZES:
        peak, opened, held = asyncio.run(measure(lines))
        peaks[lines] = peak
        print(
            f"{lines:>9,} lines: peak {peak:6.1f} MiB, last line in the view after {opened:5.2f} s, {held:,} lines held"
        )
    flat = peaks[SIZES[-1]] / peaks[SIZES[1]]
    overall = peaks[SIZES[-1]] / peaks[SIZES[0]]
    print(f"peak ratio 1,000,000 / 1,000 lines: {overall:.2f}×  (target ≤ 3×)")
    print(f"peak ratio 1,000,000 / 100,000 lines: {flat:.2f}×  (target ≤ 1.2×: flat once the view is full)")
    return 0 if overall <= 3 and flat <= 1.2 else 1


if __name__ == "__main__":
    sys.exit(main())
