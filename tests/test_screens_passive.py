"""The passive form against a real PassiveResourceManager in a real experiment."""

from __future__ import annotations

import pytest
from screens_support import Host, passive_experiment, wait_until
from textual import events
from textual.widgets import Input, TextArea

from aup_tui.screens.confirm import ConfirmScreen
from aup_tui.screens.passive_form import PassiveForm, PassiveRequest


@pytest.fixture
def run(tmp_path):
    experiment = passive_experiment(tmp_path)
    yield experiment
    experiment.close()


def form_app(run) -> tuple[Host, PassiveRequest]:
    request = PassiveRequest.from_event(run.next_request())
    app = Host(lambda: PassiveForm(request, submit=run.rm.submit_result, mark_failed=run.rm.mark_failed))
    return app, request


async def open_form(pilot) -> PassiveForm:
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, PassiveForm))
    await pilot.pause()
    return pilot.app.screen


async def paste(pilot, form: PassiveForm, text: str) -> None:
    """Deliver `text` as the terminal does a paste: to the app, which hands it to the focused widget."""
    area = form.query_one("#passive-output", TextArea)
    assert form.focused is area
    pilot.app.post_message(events.Paste(text))
    await pilot.pause()


async def test_shows_folder_config_and_command(run) -> None:
    app, request = form_app(run)
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_form(pilot)
        shown = " ".join(
            str(form.query_one(w).render())
            for w in ("#passive-workingdir", "#passive-config", "#passive-command")
        )
        assert request.workingdir in shown and request.config_path in shown
        assert str(form.query_one("#passive-command").render()) == request.command
        assert request.command.endswith(f"jobs/{request.jid}.json")


async def test_multiline_output_records_every_result_and_the_last_is_the_score(run) -> None:
    app, request = form_app(run)
    output = "rosenbrock(0.1, 0.2) = 0.83\n#Auptimizer:2.5\nepoch 2\n#Auptimizer:1.25\n#Auptimizer:0.83\n"
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_form(pilot)
        await paste(pilot, form, output)
        assert form.query_one("#passive-output", TextArea).text == output
        await pilot.press("ctrl+s")  # with the text area focused: not swallowed by it
        await wait_until(pilot, lambda: app.dismissed)
        assert app.dismissed == ["submitted"]
    job = run.wait_job(request.jid, ("FINISHED",))
    assert job["score"] == pytest.approx(0.83)
    values = [r["values"][0] for r in run.connector.intermediate_results(run.eid, request.jid)]
    assert values == pytest.approx([2.5, 1.25, 0.83])


async def test_bare_number_is_the_score(run) -> None:
    app, request = form_app(run)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_form(pilot)
        await pilot.press(*"0.25")
        await pilot.click("#passive-submit")
        await wait_until(pilot, lambda: app.dismissed)
        assert app.dismissed == ["submitted"]
    assert run.wait_job(request.jid, ("FINISHED",))["score"] == pytest.approx(0.25)


async def test_garbage_shows_inline_error_keeps_text_and_job_waits(run) -> None:
    app, request = form_app(run)
    garbage = "loss went down a lot\nlooks good to me\n"
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_form(pilot)
        await paste(pilot, form, garbage)
        await pilot.press("ctrl+s")
        error = form.query_one("#passive-error")
        await wait_until(pilot, lambda: error.has_class("-visible"))
        message = str(error.render())
        assert "#Auptimizer:" in message and "number" in message
        assert error.region.height > 0  # really on screen, under the text area
        area = form.query_one("#passive-output", TextArea)
        assert error.region.y >= area.region.bottom
        assert area.text == garbage
        assert form.focused is area
        assert app.screen is form and app.dismissed == []
        assert [j.jid for j in run.rm.waiting()] == [request.jid]
        assert run.job(request.jid)["status"] == "WAITING"
        # fixing the text and submitting again works
        area.text = "#Auptimizer:1.5\n"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.dismissed)
    assert run.wait_job(request.jid, ("FINISHED",))["score"] == pytest.approx(1.5)


async def test_mark_failed_with_a_reason(run) -> None:
    app, request = form_app(run)
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_form(pilot)
        await pilot.press("ctrl+f")
        await pilot.pause()
        reason = form.query_one("#passive-reason", Input)
        assert reason.region.height > 0 and form.focused is reason
        await pilot.press(*"out of memory")
        await pilot.press("enter")
        await wait_until(
            pilot, lambda: isinstance(app.screen, ConfirmScreen)
        )  # it ends the experiment: asked
        assert "ends the experiment" in str(app.screen.question)
        await pilot.press("y")
        await wait_until(pilot, lambda: app.dismissed)
        assert app.dismissed == ["failed"]
    job = run.wait_job(request.jid, ("FAILED",))
    assert job["error"] == "out of memory"


async def test_escape_backs_out_of_reason_then_closes_leaving_job_waiting(run) -> None:
    app, request = form_app(run)
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_form(pilot)
        await pilot.press("ctrl+f", "escape")
        await pilot.pause()
        assert app.screen is form and not form.query_one("#passive-reason-row").has_class("-visible")
        assert form.focused is form.query_one("#passive-output", TextArea)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.dismissed)
        assert app.dismissed == [None]
    assert run.job(request.jid)["status"] == "WAITING"
    assert [j.jid for j in run.rm.waiting()] == [request.jid]


async def test_cancel_button_leaves_job_waiting(run) -> None:
    app, request = form_app(run)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_form(pilot)
        await pilot.click("#passive-cancel")
        await wait_until(pilot, lambda: app.dismissed)
        assert app.dismissed == [None]
    assert run.job(request.jid)["status"] == "WAITING"


async def test_copy_command_key(run) -> None:
    app, request = form_app(run)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_form(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert app.clipboard == request.command


def test_bindings_have_descriptions() -> None:
    keys = {b.key: b.description for b in PassiveForm.BINDINGS}
    assert {"ctrl+s", "escape", "ctrl+o", "ctrl+f"} <= set(keys) and all(keys.values())
