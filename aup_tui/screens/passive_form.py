"""The form a person answers a passive job with: run the command by hand, paste what it printed.

The engine's passive manager waits (without blocking anyone) until `submit` or `mark_failed` is
called; this form is one way to call them. Both run in a thread worker because they write the
job's log and the store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aup_tui_backends.errors import AupError
from aup_tui_backends.jobs import RESULT_PREFIX, ResultParseError
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, TextArea


@dataclass(frozen=True)
class PassiveRequest:
    """What the form needs from a `PassiveResultWanted` event."""

    eid: int
    jid: int
    command: str
    workingdir: str
    config_path: str

    @classmethod
    def from_event(cls, event) -> PassiveRequest:
        return cls(
            eid=event.eid,
            jid=event.jid,
            command=event.command,
            workingdir=event.workingdir,
            config_path=event.config_path,
        )


class PasteArea(TextArea):
    """The form's text area. The submit key is handled here, in order with the keys and pastes
    queued before it, so a submit acts on exactly the text on screen however fast input came.

    (A priority binding on the screen would run as the app reads the key, before this widget
    has processed the keys and the paste still in its queue: the submit then saw older text.)
    """

    class SubmitText(Message):
        """Submit `text`: the area's whole text when the submit key or request was processed."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    async def _on_key(self, event: events.Key) -> None:
        if event.is_printable or event.key in ("enter", "tab", "escape"):
            return  # TextArea's own handler (next in the MRO) inserts it
        active = self.screen.active_bindings.get(event.key)
        if active is not None and active.node is self.screen and active.binding.action == "submit":
            event.stop()
            event.prevent_default()
            self.post_message(self.SubmitText(self.text))

    def request_submit(self) -> None:
        """Submit the text once every key and paste already queued here has been applied."""
        self.call_later(lambda: self.post_message(self.SubmitText(self.text)))


class PassiveForm(ModalScreen[str | None]):
    """Answer passive job `request.jid`.

    Dismisses with "submitted" after `submit(jid, text)` accepted the text, "failed" after
    `mark_failed(jid, reason)`, and None when closed with the job still waiting.
    """

    CSS_PATH = "passive_form.tcss"
    BINDINGS = [
        # not a priority binding: the text area handles it in order with queued keys and pastes
        Binding("ctrl+s", "submit", "Submit", id="passive.submit"),
        Binding("ctrl+o", "copy_command", "Copy command", priority=True, id="passive.copy"),
        Binding("ctrl+f", "mark_failed", "Mark failed", priority=True, id="passive.mark_failed"),
        Binding("escape", "close", "Close", id="passive.close"),
    ]

    def __init__(
        self,
        request: PassiveRequest,
        submit: Callable[[int, str], float],
        mark_failed: Callable[[int, str], None],
    ) -> None:
        super().__init__()
        self.request = request
        self._submit = submit
        self._mark_failed = mark_failed
        self._busy = False

    def compose(self) -> ComposeResult:
        req = self.request
        with Vertical(id="passive-dialog") as dialog:
            dialog.border_title = f"Job {req.jid} is waiting for you"
            dialog.border_subtitle = "ctrl+s submit · ctrl+o copy · ctrl+f fail · esc close"
            with VerticalScroll(id="passive-info"):
                yield Static(self._field("Working folder", req.workingdir), id="passive-workingdir")
                yield Static(self._field("Config file", req.config_path), id="passive-config")
                yield Label("Run this command, then paste its whole output below:", classes="passive-label")
                yield Static(req.command, id="passive-command", markup=False)
            yield PasteArea(
                id="passive-output",
                soft_wrap=True,
                show_line_numbers=False,
                placeholder=f"Paste the output ({RESULT_PREFIX}<score> lines) or type the score",
            )
            yield Static("", id="passive-error", markup=False)
            with Horizontal(id="passive-reason-row"):
                yield Input(
                    placeholder="Why did it fail? (enter to mark failed, esc to go back)", id="passive-reason"
                )
            with Horizontal(id="passive-buttons"):
                yield Button("Submit", variant="primary", id="passive-submit")
                yield Button("Copy command", id="passive-copy")
                yield Button("Mark failed", variant="error", id="passive-fail")
                yield Button("Cancel", id="passive-cancel")

    @staticmethod
    def _field(name: str, value: str) -> str:
        return f"[b]{name:<14}[/b]  {escape(value)}"

    def on_mount(self) -> None:
        self.query_one("#passive-output", TextArea).focus()

    # -- state shown --------------------------------------------------------------------

    def show_error(self, message: str) -> None:
        """Show why the text was not accepted, under the text area."""
        error = self.query_one("#passive-error", Static)
        error.update(f"✗ {message}")
        error.add_class("-visible")

    def clear_error(self) -> None:
        error = self.query_one("#passive-error", Static)
        error.update("")
        error.remove_class("-visible")

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        for button in self.query("#passive-buttons Button").results(Button):
            button.disabled = busy

    @property
    def _asking_reason(self) -> bool:
        return self.query_one("#passive-reason-row").has_class("-visible")

    # -- actions ------------------------------------------------------------------------

    def action_submit(self) -> None:
        """The submit button, the palette, or the key while the text area is not focused."""
        if self._busy:
            return
        if self._asking_reason:
            self._send_failed(self.query_one("#passive-reason", Input).value)
            return
        self.query_one("#passive-output", PasteArea).request_submit()

    @on(PasteArea.SubmitText)
    def _submit_text(self, event: PasteArea.SubmitText) -> None:
        event.stop()
        if self._busy:
            return
        if self._asking_reason:
            self._send_failed(self.query_one("#passive-reason", Input).value)
            return
        self._set_busy(True)
        self._run_submit(event.text)

    @work(thread=True, exclusive=True, group="passive-answer")
    def _run_submit(self, text: str) -> None:
        try:
            self._submit(self.request.jid, text)
        except ResultParseError as exc:
            self.app.call_from_thread(self._rejected, str(exc))
        except AupError as exc:  # e.g. the job is no longer waiting (answered elsewhere, stopped)
            self.app.call_from_thread(self._rejected, str(exc))
        except Exception as exc:  # never lose the pasted text to an unexpected error
            self.app.call_from_thread(self._rejected, f"could not submit: {exc}")
        else:
            self.app.call_from_thread(self.dismiss, "submitted")

    def _rejected(self, message: str) -> None:
        self._set_busy(False)
        self.show_error(message)
        self.query_one("#passive-output", TextArea).focus()

    def action_copy_command(self) -> None:
        self.app.copy_to_clipboard(self.request.command)
        self.notify("Command copied to the clipboard", timeout=2)

    def action_mark_failed(self) -> None:
        """First press asks for a reason; enter (or this key again) asks to confirm, then marks the job failed."""
        if self._busy:
            return
        if self._asking_reason:
            self._send_failed(self.query_one("#passive-reason", Input).value)
            return
        self.query_one("#passive-reason-row").add_class("-visible")
        self.query_one("#passive-reason", Input).focus()

    @on(Input.Submitted, "#passive-reason")
    def _reason_entered(self, event: Input.Submitted) -> None:
        event.stop()
        self._send_failed(event.value)

    def _send_failed(self, reason: str) -> None:
        """Ask first: a failed job ends the experiment (FAILED) unless its config sets
        job_failure.ignore_fail, which this form cannot see, and a passive experiment often has
        the one job; so the question is asked for every passive job."""
        if self._busy:
            return
        from .confirm import ConfirmScreen

        reason = reason.strip() or "marked failed by the user"
        question = (
            f"Mark job {self.request.jid} failed ({reason})?\n\nA failed job ends the experiment "
            f"{self.request.eid} as FAILED unless its config sets job_failure.ignore_fail."
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self._run_mark_failed(reason)  # still busy: until the job is marked
                return
            self._set_busy(False)  # back to the reason, as typed
            self.query_one("#passive-reason", Input).focus()

        self._set_busy(True)  # no second question while this one is open
        self.app.push_screen(ConfirmScreen(question, yes_label="Mark failed", no_label="Go back"), answered)

    @work(thread=True, exclusive=True, group="passive-answer")
    def _run_mark_failed(self, reason: str) -> None:
        try:
            self._mark_failed(self.request.jid, reason)
        except Exception as exc:
            self.app.call_from_thread(self._rejected, f"could not mark the job failed: {exc}")
        else:
            self.app.call_from_thread(self.dismiss, "failed")

    def action_close(self) -> None:
        """Escape backs out of the reason prompt first, then closes with the job still waiting."""
        if self._asking_reason:
            self.query_one("#passive-reason-row").remove_class("-visible")
            self.query_one("#passive-output", TextArea).focus()
            return
        self.dismiss(None)

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        event.stop()
        actions = {
            "passive-submit": self.action_submit,
            "passive-copy": self.action_copy_command,
            "passive-fail": self.action_mark_failed,
            "passive-cancel": lambda: self.dismiss(None),
        }
        action = actions.get(event.button.id or "")
        if action is not None:
            action()
