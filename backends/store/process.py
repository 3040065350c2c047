"""Who owns a record: a process id plus its start time, so a reused pid is not mistaken for us."""

from __future__ import annotations

import os
from typing import Any, NamedTuple


class ProcessId(NamedTuple):
    pid: int
    start: int  # clock ticks since boot (Linux), 0 where unknown


def _start_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    # the command name may contain spaces and parentheses: fields follow the last ')'
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


def current_process() -> ProcessId:
    return ProcessId(os.getpid(), _start_ticks(os.getpid()))


def is_alive(proc: ProcessId) -> bool:
    """True while `proc` runs (and is not a zombie or a new process that reused its pid)."""
    try:
        os.kill(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{proc.pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True  # no /proc: trust kill(0)
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":
        return False
    return not proc.start or int(fields[19]) == proc.start


def owner_alive(owner: Any) -> bool:
    """Whether the process a record names as its `owner` (`[pid, start]`, as stored) still runs."""
    return (
        isinstance(owner, (list, tuple))
        and len(owner) == 2
        and is_alive(ProcessId(int(owner[0]), int(owner[1])))
    )
