"""The README's first two commands, typed one after the other in one shell, as a newcomer does:
the first runs the example and leaves the shell where the second (the tests) works, and it
works again when typed a second time. CI runs the same test command as the README."""

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
    the folder holding pyproject.toml, so `pip install -e ".[test]"` finds the project."""
    first, second = readme_commands()[:2]
    assert second.startswith("pip install -e "), second
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
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
        test -f pyproject.toml
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


def test_ci_runs_the_readme_test_command():
    second = readme_commands()[1]
    test_command = second.split("&&")[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_command == "python -m pytest -q"
    assert test_command in [line.strip() for line in ci], ".ci/run must run the README's test command"
    assert second.split("&&")[0].strip() == 'pip install -e ".[test]"'
    assert any(line.strip().endswith('-e ".[test]"') for line in ci if "pip install" in line)
