"""What `aup-tui` shows where there is nothing to show yet: no `.aup/`, or no experiment in it."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Center, Middle, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static


class EmptyScreen(Screen):
    """A friendly explanation and the commands that get a person started."""

    CSS_PATH = "empty.tcss"

    def __init__(self, no_aup: bool = True, folder: str = "", detail: str = "") -> None:
        super().__init__()
        self.no_aup = no_aup
        self.folder = folder
        self.detail = detail

    def compose(self) -> ComposeResult:
        if self.no_aup:
            title = "No .aup folder here yet"
            lead = "aup-tui keeps its resources and results in a .aup folder" + (
                f" — none in {self.folder} or ~/.aup." if self.folder else "."
            )
            steps = [
                ("Create one with 2 local CPU slots:", "aup-tui init --cpu 2"),
                ("Then run an experiment:", "aup-tui run experiment.json"),
            ]
        else:
            title = "No experiment yet"
            lead = f"The .aup folder{' ' + self.folder if self.folder else ''} has no experiment yet."
            steps = [
                ("Run one here, live:", "aup-tui run experiment.json"),
                ("or in the background, then watch it:", "aup-tui run --headless experiment.json"),
            ]
        body = Text()
        body.append(title + "\n\n", style="bold")
        body.append(lead + "\n")
        for label, cmd in steps:
            body.append(f"\n{label}\n")
            body.append(f"  $ {cmd}\n", style="bold")
        if self.detail:
            body.append(f"\n{self.detail}\n", style="italic")
        body.append("\nPress q to quit.")
        with Middle():
            with Center():
                with Vertical(id="empty-box"):
                    yield Static(body, id="empty-text")
        yield Footer()
