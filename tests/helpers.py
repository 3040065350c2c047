"""Helpers for tests: job scripts and experiment files written on the fly, the CLI as a real process."""

from __future__ import annotations

import fcntl
import json
import os
import stat
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_script(folder: Path, name: str, body: str, shebang: str = "#!/bin/sh") -> Path:
    """An executable job script in `folder`."""
    path = folder / name
    path.write_text(shebang + "\n" + textwrap.dedent(body).lstrip("\n"))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def write_experiment(folder: Path, filename: str = "experiment.json", **overrides) -> Path:
    """An experiment.json in `folder` (defaults: 4 random jobs of ./job.sh on cpu, 2 at a time)."""
    exp = {
        "name": "test",
        "script": "./job.sh",
        "workingdir": str(folder),
        "resource": "cpu",
        "n_parallel": 2,
        "n_samples": 4,
        "target": "max",
        "proposer": "random",
        "random_seed": 3,
        "parameter_config": [{"name": "x", "range": [0, 1], "type": "float"}],
    }
    exp.update(overrides)
    path = folder / filename
    path.write_text(json.dumps(exp, indent=2))
    return path


def cli(
    *args: str, cwd: Path, input: str | None = None, timeout: float = 60, **kw
) -> subprocess.CompletedProcess:
    """Run `aup-tui ARGS` as a user would (a real process), capturing its output."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "aup_tui.cli", *args],
        cwd=cwd,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def cli_popen(*args: str, cwd: Path, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "aup_tui.cli", *args], cwd=cwd, env=env, text=True, **kw)


def set_window_size(fd: int, rows: int, columns: int) -> None:
    """Give the terminal behind `fd` this size (the process on it gets SIGWINCH)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def cli_on_pty(
    *args: str, cwd: Path, env: dict[str, str], rows: int = 24, columns: int = 80
) -> tuple[subprocess.Popen, int]:
    """Start `aup-tui ARGS` on a new pty of `rows` x `columns`, in a session of its own, with
    exactly `env` (plus PYTHONPATH); returns the process and the pty's master end to read."""
    master, slave = os.openpty()
    set_window_size(slave, rows, columns)
    proc = subprocess.Popen(
        [sys.executable, "-m", "aup_tui.cli", *args],
        cwd=cwd,
        env=dict(env, PYTHONPATH=str(ROOT)),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    return proc, master


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
