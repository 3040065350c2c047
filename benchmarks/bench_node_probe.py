"""Round time of NodeMonitor.probe_once() over 16 loopback sshd nodes vs. one node's.

The nodes are real OpenSSH sshd servers on 127.0.0.1 (tests/sshd.py).  Probes
run concurrently, so a round over 16 nodes should take about one node's time,
not 16 times it.  Two set-ups:

* plain loopback: a probe is almost pure CPU (sshd forks a shell per command,
  paramiko encrypts), so on few cores the 16 probes share the CPU;
* each command delayed 50 ms on the node (sshd ForceCommand), standing in for
  network latency / a busy host: the case concurrency is for.

Connections are opened once and reused (steady state); the first, cold round
(connect + key exchange + auth) is shown too.  The floor, measured in the same
run, is the CPU a round costs (this process plus the sshd trees: sessions and
shells) divided by the number of CPUs: on loopback, where the 16 "nodes" share
this machine's cores, no round can be faster than that.

    python benchmarks/bench_node_probe.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from aup_tui_backends.monitors import NodeMonitor, NodePool, NodeState  # noqa: E402
from sshd import SshdFactory, _descendants, slow_command_config  # noqa: E402

N = 16
REPEATS = 7


def probe_cpu(servers) -> float:
    """CPU seconds used so far by this process and every sshd tree (their sessions, shells).

    Counted per process tree rather than machine-wide, so other work on a
    shared machine does not leak into the floor.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = time.process_time()
    for server in servers:
        for pid in [server.proc.pid, *_descendants(server.proc.pid)]:
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            # utime, stime, cutime, cstime (reaped children: the commands' shells)
            total += sum(int(x) for x in fields[11:15]) / ticks
    return total


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(factory: SshdFactory, workdir: Path, label: str, extra_config=()) -> None:
    servers = factory.start_many(N, extra_config=extra_config)
    known_hosts = factory.write_known_hosts(workdir / f"known_hosts_{label[:5]}", servers)
    pool = NodePool(
        {f"n{i}": s.spec() for i, s in enumerate(servers)},
        known_hosts=known_hosts,
        connect_timeout=10,
        command_timeout=30,
    )
    try:
        monitor = NodeMonitor(pool, slow_rtt=100)
        cold = timed(monitor.probe_once)
        statuses = monitor.statuses()
        bad = [s for s in statuses.values() if s.state is not NodeState.UP]
        assert not bad, bad
        one = statistics.median(timed(lambda: monitor.probe_once(["n0"])) for _ in range(REPEATS))
        cpu0 = probe_cpu(servers)
        rounds = [timed(monitor.probe_once) for _ in range(REPEATS)]
        cpu_per_round = (probe_cpu(servers) - cpu0) / REPEATS
        round_ = statistics.median(rounds)
        # the floor: the CPU a round costs (sshd, shells and us) spread over every core;
        # on loopback the nodes share this machine's CPUs, so no round can be faster
        floor = cpu_per_round / (os.cpu_count() or 1)
        print(f"{label}:")
        print(f"  one node          {one * 1000:8.1f} ms")
        print(
            f"  16 nodes (round)  {round_ * 1000:8.1f} ms   ratio {round_ / one:5.2f}x one node"
            f"   (sequential would be ~16x)"
        )
        print(
            f"  CPU floor         {floor * 1000:8.1f} ms   ({cpu_per_round * 1000:.0f} ms of CPU per round"
            f" over {os.cpu_count()} CPUs)   round = {round_ / floor:4.2f}x floor"
        )
        print(f"  16 nodes, cold    {cold * 1000:8.1f} ms   (first round: connect + auth)")
    finally:
        pool.close()
        for s in servers:
            s.kill()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        factory = SshdFactory(Path(tmp))
        try:
            print(f"probe_once over {N} loopback sshd nodes, median of {REPEATS}, {os.cpu_count()} CPUs")
            bench(factory, Path(tmp), "plain loopback")
            bench(factory, Path(tmp), "each command +50 ms on the node", slow_command_config(0.05))
        finally:
            factory.close()


if __name__ == "__main__":
    main()
