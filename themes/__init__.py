"""aup-tui's themes: Textual `Theme` objects registered by the app at start-up.

Each theme defines, besides Textual's base colours, one variable per job/experiment state
(`$status-running`, `$status-finished`, …) and the score plot's colours (`$plot-point`,
`$plot-best`, `$plot-axis`). Widgets read them through `App.theme_variables`, so every state
stays readable in every theme: the high-contrast theme uses pure, saturated colours on black.

Pure Python (no data files), so it loads the same from an installed wheel as from a checkout.
"""

from __future__ import annotations

from textual.theme import Theme


def _status(
    running: str,
    waiting: str,
    finished: str,
    failed: str,
    stopped: str,
    early: str,
    interrupted: str,
    queued: str,
    point: str,
    best: str,
    axis: str,
) -> dict[str, str]:
    return {
        "status-running": running,
        "status-waiting": waiting,
        "status-finished": finished,
        "status-failed": failed,
        "status-stopped": stopped,
        "status-early-stopped": early,
        "status-interrupted": interrupted,
        "status-queued": queued,
        "plot-point": point,
        "plot-best": best,
        "plot-axis": axis,
    }


AUP_DARK = Theme(
    name="aup-dark",
    primary="#5FA8D3",
    secondary="#8E7DBE",
    accent="#F2B134",
    warning="#F2B134",
    error="#EF6461",
    success="#6BCB77",
    foreground="#D8DEE9",
    background="#14181F",
    surface="#1B2029",
    panel="#232A36",
    dark=True,
    variables=_status(
        running="#5FA8D3",
        waiting="#F2B134",
        finished="#6BCB77",
        failed="#EF6461",
        stopped="#B48EAD",
        early="#C9A66B",
        interrupted="#E08E45",
        queued="#7A8494",
        point="#5FA8D3",
        best="#F2B134",
        axis="#7A8494",
    )
    | {"footer-key-foreground": "#F2B134"},
)

AUP_LIGHT = Theme(
    name="aup-light",
    primary="#1F5F8B",
    secondary="#6A4C93",
    accent="#B35C00",
    warning="#9A6700",
    error="#B3261E",
    success="#1A7F37",
    foreground="#1F2328",
    background="#F6F8FA",
    surface="#FFFFFF",
    panel="#E6EAEF",
    dark=False,
    variables=_status(
        running="#0B62A4",
        waiting="#9A6700",
        finished="#1A7F37",
        failed="#B3261E",
        stopped="#6A4C93",
        early="#7D5A00",
        interrupted="#A04100",
        queued="#57606A",
        point="#0B62A4",
        best="#B35C00",
        axis="#57606A",
    )
    | {"footer-key-foreground": "#B35C00"},
)

AUP_HIGH_CONTRAST = Theme(
    name="aup-high-contrast",
    primary="#00FFFF",
    secondary="#FF00FF",
    accent="#FFFF00",
    warning="#FFFF00",
    error="#FF5555",
    success="#00FF00",
    foreground="#FFFFFF",
    background="#000000",
    surface="#000000",
    panel="#1A1A1A",
    dark=True,
    luminosity_spread=0.25,
    text_alpha=1.0,
    variables=_status(
        running="#00FFFF",
        waiting="#FFFF00",
        finished="#00FF00",
        failed="#FF5555",
        stopped="#FF00FF",
        early="#FFAF00",
        interrupted="#FF8700",
        queued="#C0C0C0",
        point="#00FFFF",
        best="#FFFF00",
        axis="#FFFFFF",
    )
    | {
        "footer-key-foreground": "#FFFF00",
        "block-cursor-background": "#FFFF00",
        "block-cursor-foreground": "#000000",
    },
)

THEMES: tuple[Theme, ...] = (AUP_DARK, AUP_LIGHT, AUP_HIGH_CONTRAST)
DEFAULT_THEME = AUP_DARK.name

#: Fallback colours when a theme (e.g. one of Textual's own) lacks our variables.
FALLBACK = dict(AUP_DARK.variables)


def status_variable(status: str) -> str:
    """The theme variable holding the colour of a job/experiment `status`."""
    return "status-" + status.lower().replace("_", "-")


__all__ = [
    "AUP_DARK",
    "AUP_LIGHT",
    "AUP_HIGH_CONTRAST",
    "THEMES",
    "DEFAULT_THEME",
    "FALLBACK",
    "status_variable",
]
