"""The README's first two commands, typed one after the other in one shell, as a newcomer does:
the first runs the example and leaves the shell where the second (the tests) works, and it
works again when typed a second time. CI runs the same test command as the README, and that
command installs what the tests need and passes pytest's arguments and exit status through."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

FENCE = re.compile(r"```sh\n(.*?)```", re.S)


def readme_commands() -> list[str]:
    """The commands (non-comment lines) of the README's first shell block."""
    block = FENCE.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert block, "README.md has no ```sh block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_first_command_leaves_the_shell_where_the_second_works(tmp_path):
    """The first command in a copy of the checkout, `pip` a no-op (the package is installed) and
    `aup-tui run` headless (no terminal here): the example runs, and afterwards the shell is in
    the checkout, where `scripts/test` is."""
    first, second = readme_commands()[:2]
    assert second == "scripts/test", second
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    shutil.copytree(
        ROOT / "examples" / "rosenbrock",
        tmp_path / "examples" / "rosenbrock",
        ignore=shutil.ignore_patterns("jobs", ".aup"),
    )
    script = f"""
        set -e
        pip() {{ echo "pip $*" >> "$LOG"; }}
        aup-tui() {{
            if [ "$1" = run ]; then shift; "$PY" -m aup_tui.cli run --headless "$@"; else "$PY" -m aup_tui.cli "$@"; fi
        }}
        {first}
        pwd > "$WHERE"
        {first}
        test -x {second}
    """
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        HOME=str(tmp_path),
        PY=sys.executable,
        LOG=str(tmp_path / "pip.log"),
        WHERE=str(tmp_path / "where"),
    )
    out = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        text=True,
        capture_output=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "where").read_text().strip() == str(tmp_path)  # back where it was typed
    assert out.stderr.count("20/20") >= 2 and out.stderr.count("FINISHED") >= 2, out.stderr[-2000:]
    assert (tmp_path / "examples" / "rosenbrock" / ".aup" / "env.ini").is_file()
    assert not (tmp_path / ".aup").exists()  # the example's .aup is the example's


def test_ci_runs_the_readme_test_command_and_the_checks():
    second = readme_commands()[1]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert second in ci, ".ci/run must run the README's test command as it stands"
    assert "scripts/check" in ci


def _shims(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A PATH where `python -m pip` and `apt-get` only log what they were asked (the package is
    installed here) and everything else is the real thing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "python").write_text(
        f'#!/bin/sh\nif [ "$1 $2" = "-m pip" ]; then echo "pip $*" >> {log}; exit 0; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "apt-get $*" >> {log}\n')
    for shim in bin_dir.iterdir():
        shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=str(ROOT))
    return log, env


def test_the_test_command_passes_pytest_arguments_and_exit_status_through(tmp_path):
    """With sshd here: no apt-get, the test extra installed, then pytest with the arguments given;
    its exit status is the command's (5, no tests collected, fails CI like any failure)."""
    log, env = _shims(tmp_path)
    command = [str(ROOT / "scripts" / "test"), "-p", "no:cacheprovider", "tests/test_readme.py"]
    run = subprocess.run(
        [*command, "-k", "no_test_is_called_this"], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 5, run.stdout + run.stderr
    calls = log.read_text()
    assert "apt-get" not in calls and "-e .[test]" in calls, calls
    one = subprocess.run(
        [*command, "-k", "ci_runs_the_readme"], env=env, capture_output=True, text=True, timeout=120
    )
    assert one.returncode == 0 and "1 passed" in one.stdout, one.stdout + one.stderr
