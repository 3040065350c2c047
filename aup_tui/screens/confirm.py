"""A question in a modal that `y`/`n` answer (a key contract scripts and tests rely on).

One dialog for every question: "stop this job?" (yes/no) as well as the quit question while an
experiment runs here (stop it / keep it running / stay), parameterised by its labels and answers.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[Any]):
    """Ask `question`; `y` dismisses with `yes` (True), `n` with `no` (False), escape with `cancel`
    (False). With a `cancel_label` a third button answers `cancel` and starts focused."""

    CSS_PATH = "confirm.tcss"
    BINDINGS = [
        Binding("y", "answer('yes')", "Yes", id="confirm.yes"),
        Binding("n", "answer('no')", "No", id="confirm.no"),
        Binding("escape", "answer('cancel')", "Cancel", id="confirm.cancel"),
    ]

    def __init__(
        self,
        question: str,
        yes_label: str = "Yes",
        no_label: str = "No",
        *,
        yes: Any = True,
        no: Any = False,
        cancel: Any = False,
        cancel_label: str | None = None,
    ) -> None:
        super().__init__(classes="-with-cancel" if cancel_label else None)
        self.question = question
        self.yes_label = yes_label
        self.no_label = no_label
        self.cancel_label = cancel_label
        self.answers = {"yes": yes, "no": no, "cancel": cancel}

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            yield Static(self.question, id="confirm-question")
            with Horizontal(id="confirm-buttons"):
                yield Button(f"{self.yes_label} [b](y)[/]", variant="error", id="confirm-yes")
                yield Button(f"{self.no_label} [b](n)[/]", variant="primary", id="confirm-no")
                if self.cancel_label:
                    yield Button(self.cancel_label, id="confirm-cancel")

    def on_mount(self) -> None:
        # The safe answer has focus, so a stray enter does not confirm something destructive.
        safe = "#confirm-cancel" if self.cancel_label else "#confirm-no"
        self.query_one(safe, Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_answer((event.button.id or "").removeprefix("confirm-"))

    def action_answer(self, choice: str) -> None:
        self.dismiss(self.answers.get(choice, self.answers["cancel"]))
