"""What `pip install .` puts in site-packages: every package folder of the checkout and the
stylesheets beside its modules. The package list in pyproject.toml is explicit (the engine and
themes folders install under other names), so a new folder left off it works from the checkout
(the editable install, every test) and breaks the installed command with a ModuleNotFoundError."""

from __future__ import annotations

import fnmatch
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

tomllib = pytest.importorskip("tomllib")

SOURCES = ("aup_tui", "backends", "themes")


def setuptools_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def installed_name(folder: Path, package_dir: dict[str, str]) -> str:
    """The dotted name `folder` (under the checkout) installs as, through `package-dir`."""
    parts = folder.relative_to(ROOT).parts
    for name, where in package_dir.items():
        if parts[: len(Path(where).parts)] == Path(where).parts:
            return ".".join((name, *parts[len(Path(where).parts) :]))
    return ".".join(parts)


def package_folders() -> dict[str, Path]:
    package_dir = setuptools_config().get("package-dir", {})
    found = {}
    for source in SOURCES:
        for init in (ROOT / source).rglob("__init__.py"):
            found[installed_name(init.parent, package_dir)] = init.parent
    return found


def test_every_package_folder_is_installed() -> None:
    listed = set(setuptools_config()["packages"])
    found = package_folders()
    missing = sorted(set(found) - listed)
    assert not missing, (
        f"add {missing} to [tool.setuptools] packages in pyproject.toml: pip install . leaves them out"
    )
    stale = sorted(listed - set(found))
    assert not stale, f"[tool.setuptools] packages lists {stale}, which have no folder"


def test_every_stylesheet_is_installed_with_its_module() -> None:
    package_data = setuptools_config().get("package-data", {})
    left_out = []
    for name, folder in package_folders().items():
        for path in folder.iterdir():
            if path.is_dir() or path.suffix in (".py", ".pyc"):
                continue
            if not any(fnmatch.fnmatch(path.name, glob) for glob in package_data.get(name, ())):
                left_out.append(str(path.relative_to(ROOT)))
    assert not left_out, f"pip install . leaves out {left_out}: add them to [tool.setuptools.package-data]"


IGNORED = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".aup", "jobs", ".venv", ".pytest_cache", "*.whl"
)


@pytest.mark.slow
def test_pip_install_dot_gives_a_working_aup_tui(tmp_path: Path) -> None:
    """What the README's first command installs, from a copy of the checkout (`--no-deps`: the
    dependencies are this interpreter's), run without the checkout's editable install: Python's
    `-S` skips the .pth files, so this interpreter's site-packages come on PYTHONPATH after the
    installed copy. Every module imports from the copy, and the example runs."""
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    target = tmp_path / "installed"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
        + ["--target", str(target), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    dependencies = [*site.getsitepackages(), site.getusersitepackages()]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), *dependencies]))
    imports = subprocess.run(
        [sys.executable, "-S", "-c", IMPORT_ALL, str(target)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imports.returncode == 0, imports.stdout[-1000:] + imports.stderr[-2000:]
    example = tmp_path / "rosenbrock"
    shutil.copytree(ROOT / "examples" / "rosenbrock", example, ignore=IGNORED)
    aup_tui = [sys.executable, "-S", "-m", "aup_tui.cli"]
    assert subprocess.run([*aup_tui, "init", "--cpu", "2"], cwd=example, env=env).returncode == 0
    run = subprocess.run(
        [*aup_tui, "run", "--headless", "experiment.json"],
        cwd=example,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "20/20" in run.stderr and "FINISHED" in run.stderr, run.stderr[-2000:]


#: imports every module of the three packages from the installed copy (argv[1]: where it is)
IMPORT_ALL = """
import importlib, pkgutil, sys
installed = sys.argv[1]
for top in ("aup_tui", "aup_tui_backends", "aup_tui_themes"):
    package = importlib.import_module(top)
    assert package.__file__.startswith(installed), f"{top} comes from {package.__file__}, not {installed}"
    for info in pkgutil.walk_packages(package.__path__, top + "."):
        module = importlib.import_module(info.name)
        assert module.__file__.startswith(installed), f"{info.name} comes from {module.__file__}"
"""
