"""Theme colours for the widgets that draw with Rich: read from the app's theme variables."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aup_tui_backends.monitors.nodes import NodeState
from aup_tui_themes import FALLBACK, status_variable
from textual.dom import DOMNode


def theme_colors(app) -> dict[str, str]:
    """The current theme's variables, with our status/plot colours filled in if it lacks them."""
    try:
        variables = app.theme_variables
    except Exception:  # no app yet (unit use)
        variables = {}
    out = dict(FALLBACK)
    out.update({k: v for k, v in variables.items() if isinstance(v, str)})
    return out


def on_theme_change(node: DOMNode, repaint: Callable[[], object]) -> None:
    """Call `repaint` after every theme change, once the new theme's colours can be read.

    The one way a view that paints with theme colours follows the theme: Textual's
    `theme_changed_signal` comes after the CSS variables are rebuilt (a watcher of `App.theme`
    runs before, when `theme_colors` still reads the old theme). Call it from `on_mount`.
    """
    node.app.theme_changed_signal.subscribe(node, lambda _theme: repaint())


def status_color(colors: dict[str, str], status: str) -> str:
    return colors.get(status_variable(status), colors.get("status-queued", "grey50"))


def state_color(colors: Mapping[str, str], state: NodeState) -> str:
    """A node state's colour: UP like a finished job, SLOW like a waiting one, DOWN like a failure."""
    return {
        NodeState.UP: colors.get("status-finished", "green"),
        NodeState.SLOW: colors.get("status-waiting", "yellow"),
        NodeState.DOWN: colors.get("status-failed", "red"),
    }.get(state, colors.get("status-queued", "grey50"))


def fmt_since(seconds: float | None) -> str:
    """A span of time in two units at most: 45s, 12m30s, 3h05m, 2d04h."""
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60:02d}:{s % 60:02d}"


def fmt_score(score: float | None) -> str:
    if score is None:
        return "—"
    return f"{score:.6g}"
