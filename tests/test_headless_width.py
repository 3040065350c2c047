"""`aup-tui run --headless` through the real process: on a terminal the progress line is redrawn in
place and always fits the terminal's width (it followed a resize too), so nothing wraps into the
scrollback; into a pipe (a CI log) it prints plain lines, no carriage returns, no escape codes."""

from __future__ import annotations

import io
import os
import re
import select
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import cli, cli_on_pty, set_window_size, write_experiment, write_script

from aup_tui.headless import Progress

REDRAW = b"\r\x1b[2K"  # how each redraw of the progress line starts


def _experiment(folder: Path, n_samples: int = 10) -> None:
    """Jobs that take a while, fail for some x (a `failed` count), and score with many digits."""
    assert cli("init", "--cpu", "2", cwd=folder).returncode == 0
    write_script(
        folder,
        "job.py",
        """
        import json, sys, time
        x = json.load(open(sys.argv[1]))["x"]
        time.sleep(0.3)
        if x > 0.6:
            sys.exit(1)
        print(f"#Auptimizer:{x / 1234.56789}")
        """,
        shebang=f"#!{sys.executable}",
    )
    write_experiment(
        folder,
        name="a-rather-long-experiment-name",
        script="./job.py",
        n_samples=n_samples,
        job_failure={"ignore_fail": True, "job_retries": 0},
    )


def _run_on_pty(folder: Path, columns: int, resize_to: int | None = None) -> tuple[bytes, int]:
    """The run's output on a pty `columns` wide (resized to `resize_to` once the line was drawn a
    few times); returns the output and the offset where the resize happened (0: none)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(TERM="xterm-256color")
    proc, master = cli_on_pty("run", "--headless", "experiment.json", cwd=folder, env=env, columns=columns)
    output = bytearray()
    resized_at = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    output += os.read(master, 65536)
                except OSError:  # EIO: the process ended and closed the terminal
                    break
            if resize_to and not resized_at and output.count(REDRAW) >= 5:
                set_window_size(master, 24, resize_to)
                resized_at = len(output)
            if proc.poll() is not None and not ready:
                break
        assert proc.wait(30) == 0, bytes(output)[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return bytes(output), resized_at


PROGRESS = re.compile(r"^(?:[█░]+ )?\d+/\d+")  # a progress line, not a message (a job failed…)


def _draws(output: bytes) -> list[str]:
    """Each redrawn progress line, as the terminal shows it (up to the next \\r or newline)."""
    chunks = [re.split(rb"[\r\n]", chunk)[0].decode() for chunk in output.split(REDRAW)[1:]]
    return [chunk for chunk in chunks if PROGRESS.match(chunk)]


@pytest.mark.parametrize("columns", [60, 80])
def test_the_progress_line_fits_the_terminal_and_never_wraps(tmp_path, columns):
    _experiment(tmp_path)
    output, _ = _run_on_pty(tmp_path, columns)
    draws = _draws(output)
    assert len(draws) >= 5, output
    too_long = [d for d in draws if len(d) >= columns]  # the last column left free: no auto-wrap
    assert not too_long, too_long
    assert all("/10" in d for d in draws), draws
    last = draws[-1]
    assert "10/10" in last and "best" in last, last
    assert b"best job" in output  # the summary follows the line


def test_the_progress_line_follows_a_resize(tmp_path):
    _experiment(tmp_path, n_samples=16)
    output, resized_at = _run_on_pty(tmp_path, 100, resize_to=40)
    assert resized_at, "the run ended before the line was drawn five times"
    before, after = _draws(output[:resized_at]), _draws(output[resized_at:])[1:]  # one may be on its way
    assert max(len(d) for d in before) > 40, before  # it used the width it had
    assert after and all(len(d) < 40 for d in after), after


def test_into_a_pipe_it_prints_plain_lines(tmp_path):
    _experiment(tmp_path)
    run = cli("run", "--headless", "experiment.json", cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stderr and "\x1b" not in run.stderr, run.stderr
    progress = [line for line in run.stderr.splitlines() if re.match(r"\[\d\d:\d\d\] \d+/10 ", line)]
    assert progress and "10/10" in progress[-1] and "best" in progress[-1], run.stderr
    assert len(progress) <= 4, progress  # a few seconds' run: a line at the start, every 5 s, at the end


def _progress() -> Progress:
    progress = Progress(10000, maximize=True, out=io.StringIO())
    state = progress.state
    state.counts = Counter({"FINISHED": 9000, "FAILED": 12, "STOPPED": 3, "RUNNING": 8})
    state.best_jid, state.best_score = 1234, 0.123456789
    return progress


@pytest.mark.parametrize(
    ("width", "shown", "gone"),
    [
        (120, ["█", "9015/10000", "running 8 failed 12 stopped 3", "best 0.123457 (job 1234)"], []),
        (79, ["9015/10000", "stopped 3", "best 0.123457 (job 1234)"], ["█"]),
        (59, ["running 8 failed 12", "best 0.123457 (job 1234)"], ["█", "stopped", ":"]),
        (39, ["9015/10000", "best 0.123457 (job 1234)"], ["running", "failed"]),
        (30, ["9015/10000  best 0.123457"], ["job 1234"]),
        (12, ["9015/10000"], ["best"]),
        (8, ["9015/10…"], []),
    ],
)
def test_what_the_line_gives_up_first_when_narrow(width, shown, gone):
    line = _progress().line(width)
    assert len(line) <= width
    assert all(part in line for part in shown), line
    assert not [part for part in gone if part in line], line
