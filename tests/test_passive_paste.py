"""A submit acts on exactly the text on screen, however fast the input came: a paste, keys and the
submit key arriving in one burst (as from tmux `paste-buffer -p` + `send-keys C-s`, or a fast
typist) must record the last line's score — in the TUI form and at the headless prompt."""

from __future__ import annotations

import pytest
from textual import events
from textual.keys import _character_to_key

from aup_tui.screens.passive_form import PassiveForm, PasteArea, PassiveRequest
from screens_support import Host, passive_experiment, wait_until

PASTED = "log line\n#Auptimizer:0.75\n"
TYPED = "#Auptimizer:0.125"
ROUNDS = 20


def key_event(char: str) -> events.Key:
    key = char if char.isalnum() else _character_to_key(char)
    return events.Key(key, char)


def burst(app, paste: str, typed: str, submit: str | None = "ctrl+s") -> None:
    """Queue a paste, typed keys and the submit key at once, with no pause for the app to catch up."""
    app.post_message(events.Paste(paste))
    for char in typed:
        app.post_message(key_event(char))
    if submit:
        app.post_message(events.Key(submit, None))


@pytest.fixture
def run(tmp_path):
    experiment = passive_experiment(tmp_path, n_samples=ROUNDS)
    yield experiment
    experiment.close()


async def answer_in_one_burst(run, send) -> tuple[int, list]:
    """Open the form of the next waiting job, `send(app, form)` without pauses, wait for the result."""
    request = PassiveRequest.from_event(run.next_request())
    app = Host(lambda: PassiveForm(request, submit=run.rm.submit_result, mark_failed=run.rm.mark_failed))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, PassiveForm))
        await pilot.pause()
        form = app.screen
        area, error = form.query_one("#passive-output", PasteArea), form.query_one("#passive-error")
        assert form.focused is area
        send(app, form)
        await wait_until(pilot, lambda: app.dismissed or error.has_class("-visible"))
        shown = area.text
        assert app.dismissed == ["submitted"], str(error.render())
    assert shown == PASTED + TYPED  # what the person saw is what was submitted
    return request.jid, app.dismissed


async def test_paste_keys_and_ctrl_s_in_one_burst_record_the_last_line(run) -> None:
    for _ in range(ROUNDS):
        jid, _ = await answer_in_one_burst(run, lambda app, form: burst(app, PASTED, TYPED))
        job = run.wait_job(jid, ("FINISHED",))
        assert job["score"] == pytest.approx(0.125)
        values = [r["values"][0] for r in run.connector.intermediate_results(run.eid, jid)]
        assert values == pytest.approx([0.75, 0.125])


async def test_submit_button_waits_for_a_paste_still_queued(run) -> None:
    """The button (and the palette) submit only once the text area applied what it had queued."""
    def send(app, form) -> None:
        burst(app, PASTED, TYPED, submit=None)
        app.call_later(form.action_submit)  # behind the paste and keys in the app's queue, as a click is

    for _ in range(3):
        jid, _ = await answer_in_one_burst(run, send)
        assert run.wait_job(jid, ("FINISHED",))["score"] == pytest.approx(0.125)


def test_submit_key_is_not_a_priority_binding() -> None:
    """A priority binding runs as the app reads the key, before queued keys reach the text area."""
    submit = next(b for b in PassiveForm.BINDINGS if b.action == "submit")
    assert submit.key == "ctrl+s" and not submit.priority
