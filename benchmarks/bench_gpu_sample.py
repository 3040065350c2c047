"""CPU time of one GPUMonitor.sample() over 8 fake GPUs with 2 processes each.

Target: at most 5 ms of CPU per sample.  The floor, measured in the same run,
is the bare cost of calling the same fake NVML functions once each per GPU;
the ratio is what the monitor adds (snapshot objects, history, matching the
processes to jobs through /proc).

    python benchmarks/bench_gpu_sample.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from aup_tui_backends.monitors import GPUMonitor, JobProcessInfo  # noqa: E402
from fake_nvml import FakeGPU, FakeNVML  # noqa: E402

N_GPUS = 8
ROUNDS = 2000


def cpu_ms_per_call(fn, rounds: int = ROUNDS) -> float:
    fn()  # warm
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(rounds):
            fn()
        best = min(best, (time.process_time() - start) / rounds * 1000)
    return best


def main() -> None:
    # 8 real jobs, each a session leader with one child: the 16 GPU processes
    leaders = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import subprocess, sys, time; c = subprocess.Popen(['sleep', '300']); "
                "print(c.pid, flush=True); time.sleep(300)",
            ],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for _ in range(N_GPUS)
    ]
    try:
        children = [int(p.stdout.readline()) for p in leaders]
        nvml = FakeNVML(
            [
                FakeGPU(
                    util=10 * i,
                    mem_used=i << 30,
                    processes=[(leaders[i].pid, 1 << 30), (children[i], 2 << 30)],
                )
                for i in range(N_GPUS)
            ]
        )
        monitor = GPUMonitor(nvml=nvml)
        monitor.set_jobs(
            {i: JobProcessInfo(jid=i, pid=leaders[i].pid, cards=(str(i),)) for i in range(N_GPUS)}
        )
        snap = monitor.sample()
        assert snap.available and len(snap.gpus) == N_GPUS
        assert all(p.jid == g.index for g in snap.gpus for p in g.processes), "processes not matched"

        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(N_GPUS)]

        def floor() -> None:
            for h in handles:
                nvml.nvmlDeviceGetUtilizationRates(h)
                nvml.nvmlDeviceGetMemoryInfo(h)
                nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)
                nvml.nvmlDeviceGetPowerUsage(h)
                nvml.nvmlDeviceGetEnforcedPowerLimit(h)
                nvml.nvmlDeviceGetComputeRunningProcesses(h)

        floor_ms = cpu_ms_per_call(floor)
        sample_ms = cpu_ms_per_call(monitor.sample)
        monitor.set_jobs({})
        nojobs_ms = cpu_ms_per_call(monitor.sample)

        print(f"GPU sample, {N_GPUS} fake GPUs x 2 processes (CPU time, best of 3 x {ROUNDS}):")
        print(f"  floor (the NVML calls alone)        {floor_ms:.3f} ms")
        print(
            f"  sample(), processes matched to jobs  {sample_ms:.3f} ms   ratio {sample_ms / floor_ms:.1f}x floor"
            f"   target <= 5 ms: {'OK' if sample_ms <= 5 else 'MISSED'}"
        )
        print(
            f"  sample(), no jobs to match           {nojobs_ms:.3f} ms   ratio {nojobs_ms / floor_ms:.1f}x floor"
        )
    finally:
        for p in leaders:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


if __name__ == "__main__":
    main()
