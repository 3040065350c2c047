"""The one-shot report of ``aup-tui resources --probe``: every resource probed once.

Probes every node of env.ini's ``node_mapping`` and ``aws_mapping`` once,
concurrently, with bounded timeouts (it never hangs on a dead host), the Ray
cluster of ``ray_address`` (its nodes from Ray's state), and the local GPUs
through NVML; returns the lines to print.
"""

from __future__ import annotations

from typing import Any

from aup_tui_backends.env_ini import load_env
from aup_tui_backends.monitors.gpu import GPUMonitor, GPUSnapshot, GPUStatus
from aup_tui_backends.monitors.nodes import NodeMonitor, NodeState, NodeStatus
from aup_tui_backends.ssh import NodePool, env_host_specs, env_hosts, host_label

__all__ = ["format_gpu_lines", "format_node_line", "probe_resources"]

_GIB = 1 << 30


def probe_resources(
    auppath: str = ".aup",
    timeout: float = 5.0,
    accept_new_hosts: bool = False,
    nvml: Any = None,
    *,
    known_hosts: str | None = None,
    slow_rtt: float = 0.5,
) -> list[str]:
    """Probe every node once (concurrently) and the local GPUs; lines to print.

    ``timeout`` bounds the connection and each remote command (a node that has
    not answered within about ``3 × timeout`` is DOWN).  Raises
    :class:`~aup_tui_backends.errors.AupError` (a ConfigError) when env.ini cannot be
    read (it refuses a bad host entry); an EC2 instance id gets a line saying it is not resolved.
    """
    env = load_env(auppath)
    hosts = env_hosts(env)
    nodes = env_host_specs(env)
    lines: list[str] = []
    statuses: dict[str, NodeStatus] = {}
    if nodes:
        pool = NodePool(
            nodes,
            known_hosts=known_hosts,
            accept_new_hosts=accept_new_hosts,
            connect_timeout=timeout,
            command_timeout=timeout,
        )
        monitor = NodeMonitor(pool, slow_rtt=slow_rtt, probe_timeout=3 * timeout + 1)
        try:
            statuses = monitor.probe_once()
        finally:
            pool.close()
    if not hosts:
        lines.append("no SSH nodes in env.ini (node_mapping, aws_mapping)")
    for host in hosts:
        if host.probeable:
            lines.append(format_node_line(statuses[host.key]))
        else:
            lines.append(f"{host.key}  {host_label(host.spec)}  not resolved (EC2 instance id)")

    if env.ray_address is not None:  # `aup-tui init --ray [ADDRESS]`
        lines.extend(_ray_lines(env.ray_address))

    gpus = GPUMonitor(nvml=nvml)
    try:
        snapshot = gpus.sample()
    finally:
        gpus.close()
    lines.extend(format_gpu_lines(snapshot))
    return lines


def _ray_lines(address: str) -> list[str]:
    """The Ray cluster env.ini names, probed once (Ray is imported only here)."""
    from aup_tui_backends.optional import installed

    if not installed("ray"):
        return ['Ray: not installed — pip install "aup-tui[ray]"']
    from aup_tui_backends.monitors.ray_cluster import probe_ray
    from aup_tui_backends.resources.ray import connect

    return probe_ray(address, connect)


def _gib(value: int | None) -> str:
    return "?" if value is None else f"{value / _GIB:.1f}"


def _gpu_brief(gpu: GPUStatus) -> str:
    parts = [f"{gpu.index} {gpu.name}".strip()]
    if gpu.lost:
        parts.append(f"LOST ({gpu.reason})")
        return " ".join(parts)
    if gpu.utilization is not None:
        parts.append(f"{gpu.utilization:.0f}%")
    if gpu.memory_total is not None:
        parts.append(f"{_gib(gpu.memory_used)}/{_gib(gpu.memory_total)} GiB")
    if gpu.temperature is not None:
        parts.append(f"{gpu.temperature:.0f}°C")
    if gpu.power_draw is not None:
        limit = f"/{gpu.power_limit:.0f}" if gpu.power_limit is not None else ""
        parts.append(f"{gpu.power_draw:.0f}{limit} W")
    return " ".join(parts)


def format_node_line(status: NodeStatus) -> str:
    """``node 4  user@host:22  UP  rtt 3 ms  load 0.10 0.20 0.30  mem 1.2/15.6 GiB  jobs 1  GPUs: …``"""
    head = f"{status.name}  {status.host}  {status.state.value}"
    if status.state is NodeState.DOWN or status.state is NodeState.UNKNOWN:
        return f"{head}  {status.error or 'not probed'}"
    parts = [head]
    if status.rtt is not None:
        parts.append(f"rtt {status.rtt * 1000:.0f} ms")
    if status.load is not None:
        parts.append("load " + " ".join(f"{x:.2f}" for x in status.load))
    if status.mem_total is not None:
        parts.append(f"mem {_gib(status.mem_used)}/{_gib(status.mem_total)} GiB")
    parts.append(f"jobs {status.jobs}")
    if status.gpus:
        parts.append("GPUs: " + "; ".join(_gpu_brief(g) for g in status.gpus))
    elif status.gpu_error:
        parts.append(f"GPUs: nvidia-smi failed ({status.gpu_error})")
    else:
        parts.append("GPUs: none")
    return "  ".join(parts)


def format_gpu_lines(snapshot: GPUSnapshot) -> list[str]:
    """The local GPUs, one line each, or one line saying why there are none."""
    if not snapshot.available:
        return [f"local GPUs: none — {snapshot.reason}"]
    lines = []
    for gpu in snapshot.gpus:
        text = f"local GPU {_gpu_brief(gpu)}"
        if gpu.jobs:
            text += "  jobs " + ",".join(str(j) for j in gpu.jobs)
        lines.append(text)
    return lines
