"""What `pip install .` puts in site-packages: every package folder of the checkout and the
stylesheets beside its modules. The package list in pyproject.toml is explicit (the engine and
themes folders install under other names), so a new folder left off it works from the checkout
(the editable install, every test) and breaks the installed command with a ModuleNotFoundError."""

from __future__ import annotations

import fnmatch
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
