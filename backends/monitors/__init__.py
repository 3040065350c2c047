"""Live monitors: local GPUs through NVML, SSH nodes through a shared connection pool.

Nothing here imports paramiko or pynvml at import time.
"""

from .gpu import GPUMonitor, GPUProcess, GPUSnapshot, GPUStatus, JobProcessInfo, nvml_reason
from .nodes import (
    CommandTimeoutError,
    HostKeyChangedError,
    NodeAuthError,
    NodeError,
    NodeMonitor,
    NodePool,
    NodeState,
    NodeStatus,
    NodeUnreachableError,
    StateChange,
    UnknownHostKeyError,
    host_label,
    parse_probe_output,
)
from .probe import format_gpu_lines, format_node_line, probe_resources

__all__ = [
    "CommandTimeoutError",
    "GPUMonitor",
    "GPUProcess",
    "GPUSnapshot",
    "GPUStatus",
    "HostKeyChangedError",
    "JobProcessInfo",
    "NodeAuthError",
    "NodeError",
    "NodeMonitor",
    "NodePool",
    "NodeState",
    "NodeStatus",
    "NodeUnreachableError",
    "StateChange",
    "UnknownHostKeyError",
    "format_gpu_lines",
    "format_node_line",
    "host_label",
    "nvml_reason",
    "parse_probe_output",
    "probe_resources",
]
