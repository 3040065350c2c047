"""Snapshots of the confirm dialog, the passive form showing an error and the job detail at 80x24."""

from __future__ import annotations

from aup_tui_backends.jobs import parse_pasted_output
from screens_support import Host, seed_finished_job, wait_until
from textual import events
from textual.widgets import TextArea

from aup_tui.screens.confirm import ConfirmScreen
from aup_tui.screens.job_detail import JobDetailScreen
from aup_tui.screens.passive_form import PassiveForm, PassiveRequest

REQUEST = PassiveRequest(
    eid=1,
    jid=7,
    command="cd /home/me/rosenbrock && ./rosenbrock.py jobs/7.json",
    workingdir="/home/me/rosenbrock",
    config_path="/home/me/rosenbrock/jobs/7.json",
)


def test_confirm_dialog(snap_compare) -> None:
    app = Host(
        lambda: ConfirmScreen(
            "Stop job 12 (running on cpu:cpu0)? Its process is killed.",
            yes_label="Stop job",
            no_label="Keep running",
        )
    )
    assert snap_compare(app, terminal_size=(80, 24))


def test_passive_form_with_error(snap_compare) -> None:
    app = Host(
        lambda: PassiveForm(
            REQUEST,
            submit=lambda jid, text: parse_pasted_output(text)[-1][0],
            mark_failed=lambda jid, reason: None,
        )
    )

    async def paste_garbage(pilot) -> None:
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, PassiveForm))
        form = pilot.app.screen
        form.query_one("#passive-output", TextArea).cursor_blink = False
        pilot.app.post_message(events.Paste("loss went down nicely\nlooks converged to me\n"))
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: form.query_one("#passive-error").has_class("-visible"))
        await pilot.pause()

    assert snap_compare(app, run_before=paste_garbage, terminal_size=(80, 24))


def test_job_detail(snap_compare, tmp_path, utc) -> None:
    conn, eid, jid = seed_finished_job(tmp_path)
    app = Host(lambda: JobDetailScreen(conn, eid, jid, poll_interval=0.05, clock=lambda: 1_767_225_700.0))

    async def loaded(pilot) -> None:
        await wait_until(
            pilot, lambda: isinstance(pilot.app.screen, JobDetailScreen) and pilot.app.screen.ended
        )
        await pilot.pause()

    try:
        assert snap_compare(app, run_before=loaded, terminal_size=(80, 24))
    finally:
        conn.close()
