"""Optional libraries (the pip extras): whether one is installed, told without importing it.

Proposers and the curve-fitting early-stop policy need libraries that a plain install lacks; the
experiment file is refused with the extra to install, at load, and without paying their import.
"""

from __future__ import annotations

import importlib.util


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it (a module set to None in
    ``sys.modules``, as tests do to hide one, counts as missing)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_ray(source: str | None = None) -> None:
    """Refuse a Ray experiment when Ray is not installed: one ConfigError saying how to install
    it (`source`: the experiment file, named in the message)."""
    if installed("ray"):
        return
    from .errors import ConfigError

    where = f" in {source}" if source else ""
    raise ConfigError(f'resource "ray"{where} needs Ray, which is not installed — pip install "aup-tui[ray]"')
