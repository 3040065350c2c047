"""`aup-tui --help` start-up time against the floor of a bare `python -c pass`, same run.

Heavy modules (textual, boto3, paramiko, pynvml) must not load for --help.

    python benchmarks/bench_startup.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(argv: list[str], runs: int = 15) -> float:
    env = dict(os.environ, PYTHONPATH=ROOT)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    floor = timed([sys.executable, "-c", "pass"])
    ours = timed([sys.executable, "-m", "aup_tui.cli", "--help"])
    heavy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from aup_tui.cli import main; main(['--help']) if False else None;"
            "import aup_tui.cli; print(sorted(m for m in ('textual','boto3','paramiko','pynvml','tinydb') if m in sys.modules))",
        ],
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"floor  python -c pass:   {floor * 1000:.0f} ms")
    print(
        f"aup-tui --help:          {ours * 1000:.0f} ms  ratio {ours / floor:.2f}x  (+{(ours - floor) * 1000:.0f} ms)"
    )
    print(f"heavy modules loaded by the CLI module: {heavy}")


if __name__ == "__main__":
    main()
