"""The command-line conventions people expect, through the real `aup-tui` process: `--version`,
help on every argument, the global options before or after the command, `NO_COLOR` (and
`--no-color`) in the TUI under a real pty, and no escape codes where output is not a terminal."""

from __future__ import annotations

import os
import re
import select
import time
from importlib.metadata import version
from pathlib import Path

import pytest
from helpers import ROOT, cli, cli_on_pty, write_experiment

# SGR (colour and style) sequences and the other escape sequences Textual writes
SGR = re.compile(rb"\x1b\[([0-9;:]*)m")
ESCAPES = re.compile(rb"\x1b(\[[0-9;:?<>=$]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[=>78])")


# --- --version and help ---------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--version"], ["status", "--version"]], ids=["before", "after"])
def test_version_is_printed_before_or_after_a_command(tmp_path, argv):
    out = cli(*argv, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"aup-tui {version('aup-tui')}\n"
    declared = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert declared and out.stdout.split()[1] == declared.group(1)


def _help_entries(text: str) -> dict[str, str]:
    """{argument: its help} from argparse's --help (entries indented by 2, help after 2+ spaces
    on the same line or on the lines below, indented further)."""
    entries: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.endswith(":") and not line.startswith(" "):  # a section: "options:", "positional arguments:"
            current = None
            continue
        entry = re.match(r"^  (\S.*?)(?:\s{2,}(\S.*))?$", line)
        if entry and not line.startswith("   "):
            current = entry.group(1)
            entries[current] = entry.group(2) or ""
        elif current is not None and line.startswith("   ") and line.strip():
            entries[current] = (entries[current] + " " + line.strip()).strip()
    return entries


def test_every_command_and_argument_has_help(tmp_path):
    top = cli("--help", cwd=tmp_path)
    assert top.returncode == 0
    commands = re.findall(r"^    ([a-z]+)\s{2,}\S", top.stdout, re.M)
    assert set(commands) >= {"init", "run", "watch", "stop", "status", "resources"}, top.stdout
    for argv in [[]] + [[c] for c in commands]:
        out = cli(*argv, "--help", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        entries = _help_entries(out.stdout)
        entries.pop("COMMAND", None)  # the heading of the command list, each command has its help
        assert {"--aup PATH", "--no-color", "--version"} <= set(entries), (argv, entries)
        missing = [name for name, text in entries.items() if not text]
        assert not missing, f"aup-tui {' '.join(argv)} --help: no help for {missing}"
    status = _help_entries(cli("status", "--help", cwd=tmp_path).stdout)
    assert status["EID"] == "the experiment (default: the latest)"


# --- no terminal: no escape codes, no TUI writing into a file --------------------------------------


def _finished_experiment(folder: Path, name: str = "colours") -> None:
    assert cli("init", "--cpu", "2", cwd=folder).returncode == 0
    (folder / "job.sh").write_text("#!/bin/sh\necho '#Auptimizer:0.5'\n")
    (folder / "job.sh").chmod(0o755)
    write_experiment(folder, name=name, n_samples=2)


def test_run_without_a_terminal_runs_headless_without_escape_codes(tmp_path):
    _finished_experiment(tmp_path)
    run = cli("run", "experiment.json", cwd=tmp_path, timeout=120)  # stdin, stdout, stderr: pipes
    assert run.returncode == 0, run.stderr
    assert run.stderr.startswith("aup-tui: no terminal for the dashboard: running headless\n")
    assert "2/2" in run.stderr and "best job" in run.stderr
    outputs = [run.stdout, run.stderr]
    for argv in (["status"], ["status", "--json"], ["resources"], ["--help"], ["init", "--help"]):
        out = cli(*argv, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        outputs += [out.stdout, out.stderr]
    assert not [o for o in outputs if "\x1b" in o], outputs


@pytest.mark.parametrize("argv", [[], ["watch"]], ids=["dashboard", "watch"])
def test_the_dashboard_without_a_terminal_is_one_line_not_escape_codes(tmp_path, argv):
    _finished_experiment(tmp_path)
    assert cli("run", "--headless", "experiment.json", cwd=tmp_path, timeout=120).returncode == 0
    out = cli(*argv, cwd=tmp_path, timeout=30)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "needs a terminal" in out.stderr, out.stderr
    assert "aup-tui status" in out.stderr and "\x1b" not in out.stderr


# --- NO_COLOR in the TUI, under a real pty ----------------------------------------------------------


def _tui_output(argv: list[str], cwd: Path, env: dict[str, str], until: bytes, timeout: float = 60) -> bytes:
    """Run the TUI on a 100x24 pty until its screen shows `until`, then quit it with `q`."""
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TEXTUAL")}
    environ.update(TERM="xterm-256color", COLORTERM="truecolor", **env)
    proc, master = cli_on_pty(*argv, cwd=cwd, env=environ, columns=100)
    output = bytearray()
    quit_at = None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    output += os.read(master, 65536)
                except OSError:  # EIO: the app ended and closed the terminal
                    break
            if quit_at is None and until in ESCAPES.sub(b"", bytes(output)):
                quit_at = time.monotonic() + 1.0  # a second more of redraws (status colours, cursor)
            if quit_at is not None and time.monotonic() > quit_at:
                os.write(master, b"q")
                quit_at = float("inf")
            if proc.poll() is not None and not ready:
                break
        assert quit_at == float("inf"), f"the TUI never showed {until!r}: {bytes(output)[-2000:]!r}"
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return bytes(output)


def _colours(output: bytes) -> set[tuple[int, ...]]:
    """Every colour the output sets: (r, g, b) for true colours, (n,) for palette colours."""
    found: set[tuple[int, ...]] = set()
    for match in SGR.finditer(output):
        params = [int(p) if p.isdigit() else 0 for p in re.split(rb"[;:]", match.group(1))]
        i = 0
        while i < len(params):
            p = params[i]
            if p in (38, 48, 58) and i + 1 < len(params):
                if params[i + 1] == 2:
                    found.add(tuple(params[i + 2 : i + 5]))
                    i += 5
                    continue
                if params[i + 1] == 5 and i + 2 < len(params):
                    found.add((params[i + 2],))
                    i += 3
                    continue
            if 30 <= p <= 37 or 40 <= p <= 47 or 90 <= p <= 97 or 100 <= p <= 107:
                found.add((p % 10 + (8 if p >= 90 else 0),))  # the 16 ANSI colours as palette 0-15
            i += 1
    return found


def _is_grey(colour: tuple[int, ...]) -> bool:
    if len(colour) == 3:
        return colour[0] == colour[1] == colour[2]
    n = colour[0]
    return (
        n in (0, 7, 8, 15)
        or n >= 232
        or (16 <= n <= 231 and (n - 16) // 36 == (n - 16) // 6 % 6 == (n - 16) % 6)
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("colours")
    _finished_experiment(folder)
    assert cli("run", "--headless", "experiment.json", cwd=folder, timeout=120).returncode == 0
    return folder


def test_the_tui_is_in_colour_by_default(finished):
    colours = _colours(_tui_output([], finished, {}, until=b"colours"))
    assert [c for c in colours if not _is_grey(c)], colours  # what the NO_COLOR tests would miss


@pytest.mark.parametrize(
    "argv, env",
    [([], {"NO_COLOR": "1"}), (["--no-color"], {}), (["watch", "--no-color"], {})],
    ids=["NO_COLOR", "--no-color-before", "--no-color-after"],
)
def test_no_color_makes_the_tui_grey(finished, argv, env):
    """Textual honours NO_COLOR with its monochrome filter: every colour it still sets is a grey
    (r = g = b), so the screen keeps its contrast (selected row, borders) without any hue."""
    colours = _colours(_tui_output(argv, finished, env, until=b"colours"))
    assert colours and all(_is_grey(c) for c in colours), sorted(c for c in colours if not _is_grey(c))
