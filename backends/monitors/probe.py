"""What one probe of a node runs there, and what its output says.

:func:`probe_script` is one ``sh -c`` command: load, memory and GPUs (``nvidia-smi`` when
present, bounded by ``timeout``); :func:`parse_probe_output` reads its output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aup_tui_backends.monitors.gpu import GPUStatus

__all__ = ["PROBE_SCRIPT", "ProbeResult", "parse_probe_output", "probe_script"]

NVIDIA_SMI_QUERY = (
    "nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used,memory.total,"
    "temperature.gpu,power.draw --format=csv,noheader,nounits"
)


def probe_script(smi_timeout: float = 10.0) -> str:
    """The one remote command of a probe (run with ``sh -c``, whatever the login shell).

    Shell builtins only, except nvidia-smi (bounded by ``timeout`` where the
    node has it: a wedged GPU can hang nvidia-smi) and uptime where there is
    no /proc.
    """
    limit = max(1, int(smi_timeout))
    return (
        'if [ -r /proc/loadavg ]; then read -r l < /proc/loadavg; echo "$l"; else uptime; fi; '
        "echo @@mem; "
        "if [ -r /proc/meminfo ]; then while read -r k v u; do case $k in "
        'MemTotal:|MemAvailable:) echo "$k $v $u";; esac; done < /proc/meminfo; fi; '
        "echo @@gpu; "
        "if command -v nvidia-smi >/dev/null 2>&1; then "
        f"if command -v timeout >/dev/null 2>&1; then timeout {limit} {NVIDIA_SMI_QUERY} 2>&1; "
        f'else {NVIDIA_SMI_QUERY} 2>&1; fi; echo "@@rc $?"; '
        "else echo @@nosmi; fi"
    )


PROBE_SCRIPT = probe_script()


@dataclass(frozen=True)
class ProbeResult:
    """What one probe of one node found (parsed from :data:`PROBE_SCRIPT`)."""

    load: tuple[float, float, float] | None = None
    mem_total: int | None = None
    mem_available: int | None = None
    gpus: tuple[GPUStatus, ...] = ()
    gpu_error: str = ""


_LOAD_RE = re.compile(r"load averages?:\s*([\d.]+),?\s+([\d.]+),?\s+([\d.]+)")


def _num(text: str) -> float | None:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]", …


def parse_probe_output(output: str) -> ProbeResult:
    """Parse the output of :data:`PROBE_SCRIPT`."""
    head, _, rest = output.partition("@@mem")
    mem_part, _, gpu_part = rest.partition("@@gpu")

    load = None
    first = head.strip().splitlines()[0] if head.strip() else ""
    parts = first.split()
    if len(parts) >= 3 and all(_num(p) is not None for p in parts[:3]):
        load = (float(parts[0]), float(parts[1]), float(parts[2]))
    else:
        m = _LOAD_RE.search(head)
        if m:
            load = (float(m.group(1)), float(m.group(2)), float(m.group(3)))

    mem: dict[str, int] = {}
    for line in mem_part.splitlines():
        key, _, value = line.partition(":")
        fields = value.split()
        if fields and fields[0].isdigit():
            factor = 1024 if len(fields) > 1 and fields[1].lower() == "kb" else 1
            mem[key.strip()] = int(fields[0]) * factor

    gpus: list[GPUStatus] = []
    gpu_error = ""
    lines = [line.strip() for line in gpu_part.strip().splitlines() if line.strip()]
    if lines and lines[-1].startswith("@@rc"):
        rc = lines[-1].split()[-1]
        body = lines[:-1]
        if rc == "124" and not body:
            gpu_error = "nvidia-smi did not answer in time"
        elif rc != "0":
            gpu_error = next((ln for ln in body), f"nvidia-smi exited with status {rc}")
        else:
            for line in body:
                fields = [f.strip() for f in line.split(",")]
                if len(fields) < 7:
                    continue
                # the name may itself contain commas: take fields from both ends
                index = _num(fields[0])
                if index is None:
                    continue
                util, used, total, temp, power = (_num(f) for f in fields[-5:])
                gpus.append(
                    GPUStatus(
                        index=int(index),
                        name=", ".join(fields[1:-5]),
                        utilization=util,
                        memory_used=None if used is None else int(used * 1024 * 1024),
                        memory_total=None if total is None else int(total * 1024 * 1024),
                        temperature=temp,
                        power_draw=power,
                    )
                )
    return ProbeResult(
        load=load,
        mem_total=mem.get("MemTotal"),
        mem_available=mem.get("MemAvailable"),
        gpus=tuple(gpus),
        gpu_error=gpu_error,
    )
