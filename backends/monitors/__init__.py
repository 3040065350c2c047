"""Live monitors: local GPUs through NVML, SSH nodes over the shared transport
(:mod:`aup_tui_backends.ssh`).

Nothing here imports paramiko or pynvml at import time.
"""

from .gpu import GPUMonitor, GPUProcess, GPUSnapshot, GPUStatus, JobProcessInfo, nvml_reason
from .nodes import NodeMonitor, NodeState, NodeStatus, StateChange
from .probe import ProbeResult, parse_probe_output, probe_script
from .report import format_gpu_lines, format_node_line, probe_resources

__all__ = [
    "GPUMonitor",
    "GPUProcess",
    "GPUSnapshot",
    "GPUStatus",
    "JobProcessInfo",
    "NodeMonitor",
    "NodeState",
    "NodeStatus",
    "ProbeResult",
    "StateChange",
    "format_gpu_lines",
    "format_node_line",
    "nvml_reason",
    "parse_probe_output",
    "probe_resources",
    "probe_script",
]
