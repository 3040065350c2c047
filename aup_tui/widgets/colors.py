"""Theme colours for the widgets that draw with Rich: read from the app's theme variables."""

from __future__ import annotations

from themes import FALLBACK, status_variable


def theme_colors(app) -> dict[str, str]:
    """The current theme's variables, with our status/plot colours filled in if it lacks them."""
    try:
        variables = app.theme_variables
    except Exception:  # no app yet (unit use)
        variables = {}
    out = dict(FALLBACK)
    out.update({k: v for k, v in variables.items() if isinstance(v, str)})
    return out


def status_color(colors: dict[str, str], status: str) -> str:
    return colors.get(status_variable(status), colors.get("status-queued", "grey50"))


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
