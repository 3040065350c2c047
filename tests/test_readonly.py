"""`aup-tui watch --readonly` (as nvitop's and k9s's): every key that stops a job or the experiment or
answers a passive job is hidden and disabled — in the footer, the palette and the help — and quit
just leaves."""

from __future__ import annotations

import pytest
from scenes import CLOCK, RecordingSource, demo_state
from screens_support import shown_in_palette, wait_until
from textual.widgets import Footer

from aup_tui import cli
from aup_tui.app import AupApp
from aup_tui.screens.dashboard import DashboardScreen
from aup_tui.screens.help import HelpScreen
from aup_tui.screens.passive_form import PassiveForm


def app_for(readonly: bool) -> tuple[AupApp, RecordingSource]:
    source = RecordingSource()
    app = AupApp(
        state=demo_state(waiting=True), clock=CLOCK, find=False, demo_source=source, readonly=readonly
    )
    return app, source


def footer_text(app) -> str:
    footer = app.screen.query_one(Footer)
    return " ".join(str(getattr(item, "description", "")) for item in footer.query("FooterKey"))


async def test_readonly_hides_and_disables_every_stop_and_answer_key():
    app, source = app_for(readonly=True)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause(0.3)
        assert isinstance(app.screen, DashboardScreen)  # no passive form popped up
        footer = footer_text(app)
        assert "Stop job" not in footer and "Stop exp." not in footer and "Answer job" not in footer
        await pilot.press("s", "S", "p")
        await pilot.pause(0.2)
        assert isinstance(app.screen, DashboardScreen) and source.calls == []
        shown = await shown_in_palette(pilot, "stop")
        assert not [s for s in shown if s.startswith("Stop")], shown
        assert "Answer waiting passive job" not in await shown_in_palette(pilot, "answer")
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        keys = [description for _, _, description in app.screen.rows]
        assert not {"Stop job", "Stop exp.", "Answer job"} & set(keys), keys
        assert "Open" in keys
        await pilot.press("escape")
        await pilot.press("q")  # nothing to ask: it just leaves
        await pilot.pause(0.2)
    assert app.return_code == 0


async def test_without_readonly_the_same_dashboard_offers_them():
    app, _ = app_for(readonly=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, PassiveForm))  # it calls the person
        await pilot.press("escape")
        await pilot.pause(0.2)
        footer = footer_text(app)
        assert "Stop job" in footer and "Stop exp." in footer and "Answer job" in footer


@pytest.mark.parametrize("flag", [True, False])
def test_watch_readonly_reaches_the_app(monkeypatch, tmp_path, flag):
    from aup_tui_backends.setup import init_aup
    from aup_tui_backends.store import TinyDBConnector

    import aup_tui.app

    auppath = str(tmp_path / ".aup")
    init_aup(auppath, cpu=1)
    conn = TinyDBConnector(auppath)
    conn.start_experiment("me", "w", {}, n_samples=1, target="max", workingdir=str(tmp_path))
    conn.close()
    seen = {}
    monkeypatch.setattr(cli, "_require_terminal", lambda what: None)
    monkeypatch.setattr(aup_tui.app, "run_app", lambda *a, **kw: seen.update(kw) or 0)
    argv = ["watch", "--aup", auppath] + (["--readonly"] if flag else [])
    assert cli.main(argv) == 0
    assert seen["readonly"] is flag and seen["watch"] == 1


async def test_watch_readonly_job_detail_offers_no_stop(tmp_path):
    """A real watched store: the job detail's `s` goes through the dashboard's rules, so it is off too."""
    from test_job_detail_actions import open_dashboard, open_detail, running_store

    conn, eid = running_store(tmp_path)
    app = AupApp(str(tmp_path / ".aup"), connector=conn, watch=eid, readonly=True)
    async with app.run_test(size=(120, 30)) as pilot:
        dashboard = await open_dashboard(pilot, app)
        assert dashboard.check_action("stop_job", ()) is False
        detail = await open_detail(pilot, app, 3)  # a running job
        assert detail.check_action("stop_job", ()) is False
        assert "Stop job" not in footer_text(app)
        await pilot.press("s")
        await pilot.pause(0.2)
        assert app.screen is detail  # no question asked
        assert conn.get_job(3, eid)["status"] == "RUNNING"
