"""The job detail's actions, on a dashboard watching a real store: stop, next / previous job in the
table's order, copy config and command line, the log full screen, and the palette offering only
what applies."""

from __future__ import annotations

import json

from aup_tui_backends import TinyDBConnector
from aup_tui_backends.setup import init_aup
from screens_support import shown_in_palette, wait_until

from aup_tui.app import AupApp
from aup_tui.screens.confirm import ConfirmScreen
from aup_tui.screens.dashboard import DashboardScreen
from aup_tui.screens.job_detail import JobDetailScreen
from aup_tui.widgets.job_table import JobTable

SIZE = (120, 32)
SCORES = {1: 0.5, 2: None, 3: None, 4: 0.2}  # 2 failed, 3 runs


def running_store(tmp_path) -> tuple[TinyDBConnector, int]:
    """A running experiment (run by this process, as far as the store knows) with four jobs."""
    init_aup(str(tmp_path / ".aup"), cpu=2)
    conn = TinyDBConnector(str(tmp_path / ".aup"))
    eid = conn.start_experiment(
        "me",
        "sweep",
        {},
        workingdir=str(tmp_path),
        script="train.py",
        target="min",
        resource="cpu",
        n_samples=4,
    )
    for jid, score in SCORES.items():
        conn.start_job(eid, jid, {"lr": jid / 10, "layers": jid}, 1, "cpu:cpu0", 1)
        if jid == 2:
            conn.end_job(eid, jid, None, "FAILED", error="train.py exited with status 2")
        elif score is not None:
            conn.end_job(eid, jid, score, "FINISHED")
    (tmp_path / "jobs").mkdir(exist_ok=True)
    (tmp_path / "jobs" / "3.1.out").write_text("epoch 1\nepoch 2\n")
    return conn, eid


def toasts(app: AupApp) -> list[str]:
    return [notification.message for notification in app._notifications]


async def open_dashboard(pilot, app: AupApp) -> DashboardScreen:
    await wait_until(
        pilot, lambda: isinstance(app.screen, DashboardScreen) and len(app.screen.state.jobs) == 4
    )
    return app.screen


async def open_detail(pilot, app: AupApp, jid: int) -> JobDetailScreen:
    table = app.screen.query_one(JobTable)
    table.move_cursor(row=table.get_row_index(str(jid)))
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.job is not None)
    return app.screen


async def test_stop_asks_then_stops_the_running_job_and_is_not_offered_for_a_finished_one(tmp_path):
    conn, eid = running_store(tmp_path)
    app = AupApp(str(tmp_path / ".aup"), connector=conn, watch=eid)
    async with app.run_test(size=SIZE) as pilot:
        await open_dashboard(pilot, app)
        detail = await open_detail(pilot, app, 3)
        assert detail.check_action("stop_job", ()) is True
        assert "Stop this job" in await shown_in_palette(pilot, "stop")
        await pilot.press("s")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Stop job 3" in str(app.screen.question)
        await pilot.press("y")
        await wait_until(pilot, lambda: any(r["jid"] == 3 for r in conn.stop_requests(eid)))
        assert app.screen is detail
        await pilot.press("escape")
        finished = await open_detail(pilot, app, 4)
        assert finished.check_action("stop_job", ()) is False
        assert "Stop this job" not in await shown_in_palette(pilot, "stop")
        await pilot.press("s")  # a finished job: nothing to ask
        await pilot.pause()
        assert app.screen is finished
    assert [r["jid"] for r in conn.stop_requests(eid)] == [3]


async def test_next_and_previous_follow_the_tables_order(tmp_path):
    conn, eid = running_store(tmp_path)
    app = AupApp(str(tmp_path / ".aup"), connector=conn, watch=eid)
    async with app.run_test(size=SIZE) as pilot:
        dashboard = await open_dashboard(pilot, app)
        table = dashboard.query_one(JobTable)
        table.sort_by("score", reverse=False)  # 4 (0.2), 1 (0.5), then the unscored 2, 3
        await pilot.pause()
        order = table.shown_jids
        assert order[:2] == [4, 1]
        detail = await open_detail(pilot, app, order[0])
        seen = [detail.jid]
        for _ in range(3):
            await pilot.press("right_square_bracket")
            await wait_until(
                pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.jid != seen[-1]
            )
            seen.append(app.screen.jid)
        assert seen == order
        await pilot.press("right_square_bracket")  # the last: stays, says so
        await pilot.pause()
        assert app.screen.jid == order[-1]
        await pilot.press("left_square_bracket")
        await wait_until(pilot, lambda: app.screen.jid == order[-2])
        await wait_until(pilot, lambda: app.screen.job is not None)
        assert f"Job {order[-2]}" in str(app.screen.query_one("#detail-title").render())
        await pilot.press("escape")  # back on the dashboard, the job last shown selected
        await pilot.pause()
        assert app.screen is dashboard and table.selected_jid == order[-2]


async def test_copy_config_and_command_line(tmp_path):
    conn, eid = running_store(tmp_path)
    app = AupApp(str(tmp_path / ".aup"), connector=conn, watch=eid)
    async with app.run_test(size=SIZE) as pilot:
        await open_dashboard(pilot, app)
        detail = await open_detail(pilot, app, 3)
        await pilot.press("c")
        await wait_until(pilot, lambda: any("copied job 3's config" in t for t in toasts(app)))
        assert json.loads(app.clipboard) == {"lr": 0.3, "layers": 3}
        await pilot.press("C")
        await wait_until(pilot, lambda: any("command line" in t for t in toasts(app)))
        assert app.clipboard == detail.command
        assert app.clipboard.endswith("./train.py jobs/3.json") and str(tmp_path) in app.clipboard


async def test_l_shows_the_log_full_screen_and_back(tmp_path):
    conn, eid = running_store(tmp_path)
    app = AupApp(str(tmp_path / ".aup"), connector=conn, watch=eid)
    async with app.run_test(size=SIZE) as pilot:
        await open_dashboard(pilot, app)
        detail = await open_detail(pilot, app, 3)
        log = detail.query_one("#detail-log")
        height = log.region.height
        await pilot.press("l")
        await pilot.pause()
        assert (
            not detail.query_one("#detail-top").display or detail.query_one("#detail-top").region.height == 0
        )
        assert log.region.height > height and detail.focused is log
        assert "Log: with the job's details" in await shown_in_palette(pilot, "log")
        await pilot.press("escape")  # out of full screen first
        await pilot.pause()
        assert app.screen is detail and log.region.height == height
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen)


async def test_a_detail_opened_on_its_own_offers_no_stop_or_stepping(tmp_path):
    from screens_support import Host

    conn, eid = running_store(tmp_path)
    app = Host(lambda: JobDetailScreen(conn, eid, 3, poll_interval=0.1))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(
            pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.job is not None
        )
        shown = await shown_in_palette(pilot, "job")
        assert "Stop this job" not in shown and "Next job" not in shown
        assert "Copy config" in await shown_in_palette(pilot, "copy")
