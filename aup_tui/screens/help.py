"""Help: the keys that work on the screen underneath, read from the bindings themselves."""

from __future__ import annotations

from rich.table import Table
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    """The keys of the focused widget, the screen and the app, and the contract's other keys."""

    CSS_PATH = "help.tcss"
    BINDINGS = [
        Binding("escape", "close", "Close", id="help.close"),
        Binding("question_mark,f1", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(justify="right", style="bold")
        table.add_column()
        group = None
        for grp, key, description in self.rows:
            if grp != group:
                if group is not None:
                    table.add_row("", "")
                table.add_row("", f"[b u]{grp}[/]")
                group = grp
            table.add_row(key, description)
        with Vertical(id="help-dialog"):
            yield Static(table, id="help-keys")
            yield Static("escape, ? or f1 closes · ctrl+p finds any action by name", id="help-hint")

    def action_close(self) -> None:
        self.dismiss(None)


def help_rows(app: App, screen: Screen) -> list[tuple[str, str, str]]:
    """(group, key, description) of every described binding of the focused widget, screen and app."""
    rows: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    nodes: list[tuple[str, object]] = []
    focused = screen.focused
    if focused is not None:
        nodes.append(("This table" if "Table" in type(focused).__name__ else "This field", focused))
    nodes += [("This screen", screen), ("Everywhere", app)]
    for group, node in nodes:
        for cls in type(node).__mro__:
            for binding in cls.__dict__.get("BINDINGS", ()):
                if not isinstance(binding, Binding) or not binding.description:
                    continue
                if cls.__module__.startswith("textual.") and cls is not type(node):
                    continue  # Textual's own generic keys (arrows, page up…) are not worth listing
                check = getattr(node, "check_action", None)
                if check is not None and check(binding.action.partition("(")[0], ()) is False:
                    continue  # a key that does nothing here now (as the footer hides it)
                key, *others = [app.get_key_display(b) for b in Binding.make_bindings([binding])]
                if key in seen:
                    continue
                seen.update((key, *others))
                rows.append(
                    (group, key, binding.description + (f" (or {', '.join(others)})" if others else ""))
                )
    rows += [
        ("Everywhere", "ctrl+p", "Command palette: every action by name"),
        ("Dialogs", "y / n", "Answer a confirm dialog (escape: no)"),
        ("Dialogs", "ctrl+s", "Submit the passive-job form (escape leaves the job waiting)"),
    ]
    return rows
