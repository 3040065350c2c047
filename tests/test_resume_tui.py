"""Resume and re-run from the TUI: the picker's and the dashboard's `R` / `ctrl+r`, the job detail's `R`
(re-run this job's config), offered only where they apply. Real experiments, a real store."""

from __future__ import annotations

from pathlib import Path

from aup_tui_backends.setup import init_aup
from aup_tui_backends.store import TinyDBConnector
from helpers import cli, write_experiment, write_script
from screens_support import wait_until

from aup_tui.app import AupApp
from aup_tui.screens.confirm import ConfirmScreen
from aup_tui.screens.dashboard import DashboardScreen
from aup_tui.screens.help import help_rows
from aup_tui.screens.job_detail import JobDetailScreen
from aup_tui.screens.picker import PickerScreen
from aup_tui.widgets.job_table import JobTable

SIZE = (110, 30)

#: x = 2 fails until the file `fixed` exists
BREAKS_ON_2 = """
x=$(sed 's/.*"x": *\\([-0-9.e]*\\).*/\\1/' "$1")
if [ "$x" = 2 ] && [ ! -f fixed ]; then echo "x=2 breaks" >&2; exit 3; fi
echo "#Auptimizer:$x"
"""


def two_experiments(tmp_path: Path) -> str:
    """Experiment 1 FAILED at x=2 (1 of 4 finished); experiment 2 FINISHED with x=2 failed."""
    init_aup(str(tmp_path / ".aup"), cpu=2)
    write_script(tmp_path, "job.sh", BREAKS_ON_2)
    grid = {
        "proposer": "sequence",
        "n_samples": 4,
        "n_parallel": 1,
        "parameter_config": [{"name": "x", "range": [1, 4], "type": "int"}],
    }
    write_experiment(tmp_path, "stops.json", name="stops", job_failure={"job_retries": 0}, **grid)
    write_experiment(
        tmp_path, "goes-on.json", name="goes-on", job_failure={"ignore_fail": True, "job_retries": 0}, **grid
    )
    assert cli("run", "--headless", "stops.json", cwd=tmp_path).returncode == 1
    assert cli("run", "--headless", "goes-on.json", cwd=tmp_path).returncode == 0
    (tmp_path / "fixed").touch()
    return str(tmp_path / ".aup")


def palette_names(app) -> list[str]:
    return [c.name for provider in app.screen.COMMANDS for c in provider(app.screen).commands()]


def footer_keys(app) -> set[str]:
    """The descriptions of the keys the footer shows now."""
    return {
        b.binding.description
        for b in app.screen.active_bindings.values()
        if b.enabled and b.binding.show and b.node is app.screen
    }


def store_jobs(auppath: str, eid: int) -> dict[int, dict]:
    conn = TinyDBConnector(auppath)
    try:
        return {j["config"]["x"]: j for j in conn.jobs(eid)}
    finally:
        conn.close()


def live_dashboard(app) -> DashboardScreen | None:
    screen = app.screen
    return (
        screen
        if isinstance(screen, DashboardScreen) and screen.source is not None and screen.source.live
        else None
    )


def finish(app) -> None:
    if app.experiment is not None:
        app.exp_thread.join(20)


async def test_picker_offers_resume_for_a_failed_experiment_and_r_resumes_it_live(tmp_path):
    auppath = two_experiments(tmp_path)
    app = AupApp(auppath, connector=TinyDBConnector(auppath))
    try:
        async with app.run_test(size=SIZE) as pilot:
            assert isinstance(app.screen, PickerScreen)
            await wait_until(pilot, lambda: app.screen.rows is not None)
            await pilot.pause()
            assert app.screen.selected_eid == 2  # newest first: finished, with a failed job
            assert "Re-run failed" in footer_keys(app) and "Resume" not in footer_keys(app)
            assert "Re-run failed jobs of selected experiment" in palette_names(app)
            assert "Resume selected experiment" not in palette_names(app)
            await pilot.press("down")
            await pilot.pause()
            assert app.screen.selected_eid == 1  # failed before its budget was spent
            assert "Resume" in footer_keys(app) and "Re-run failed" not in footer_keys(app)
            assert "Resume selected experiment" in palette_names(app)
            await pilot.press("R")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            assert "Resume experiment 1?" in str(app.screen.query_one("#confirm-question").render())
            await pilot.press("y")
            await wait_until(pilot, lambda: live_dashboard(app) is not None, timeout=20)
            state = app.screen.state
            await wait_until(pilot, lambda: state.status == "FINISHED", timeout=30)
            assert state.eid == 1 and state.done == 4 and state.failed == 0 and len(state.jobs) == 4
            assert "Resume" not in footer_keys(app)  # a finished run offers no resume
    finally:
        finish(app)
    jobs = store_jobs(auppath, 1)
    assert sorted(jobs) == [1, 2, 3, 4] and all(j["status"] == "FINISHED" for j in jobs.values())
    assert [a["status"] for a in jobs[2]["attempts"]] == ["FAILED", "FINISHED"]


async def test_dashboard_ctrl_r_reruns_the_failed_jobs_as_new_attempts(tmp_path):
    auppath = two_experiments(tmp_path)
    app = AupApp(auppath, connector=TinyDBConnector(auppath), watch=2)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(
                pilot, lambda: isinstance(app.screen, DashboardScreen) and app.screen.state.done == 3
            )
            await pilot.pause()
            assert "Re-run failed" in footer_keys(app) and "Resume" not in footer_keys(app)
            assert "Re-run failed jobs" in palette_names(app) and "Resume experiment" not in palette_names(
                app
            )
            assert ("This screen", "^r", "Re-run failed") in help_rows(app, app.screen)  # ? lists it
            await pilot.press("ctrl+r")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_until(pilot, lambda: live_dashboard(app) is not None, timeout=20)
            state = app.screen.state
            await wait_until(pilot, lambda: state.status == "FINISHED" and state.failed == 0, timeout=30)
            assert state.done == 4 and len(state.jobs) == 4  # counted in the totals, no new rows
            failed_jid = store_jobs(auppath, 2)[2]["jid"]
            assert state.jobs[failed_jid].attempts == 2  # the table shows the new attempt
    finally:
        finish(app)
    assert [a["status"] for a in store_jobs(auppath, 2)[2]["attempts"]] == ["FAILED", "FINISHED"]


async def test_job_detail_R_reruns_this_jobs_config(tmp_path):
    auppath = two_experiments(tmp_path)
    app = AupApp(auppath, connector=TinyDBConnector(auppath), watch=2)
    first = store_jobs(auppath, 2)[1]["jid"]
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(
                pilot, lambda: isinstance(app.screen, DashboardScreen) and app.screen.state.done == 3
            )
            app.screen.open_job_detail(first)
            await wait_until(pilot, lambda: isinstance(app.screen, JobDetailScreen))
            await pilot.pause()
            assert "Re-run job" in footer_keys(app)
            assert "Re-run this job's config" in palette_names(app)
            await pilot.press("R")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            assert f"Run job(s) {first} of experiment 2 again" in str(
                app.screen.query_one("#confirm-question").render()
            )
            await pilot.press("y")
            await wait_until(pilot, lambda: live_dashboard(app) is not None, timeout=20)
            state = app.screen.state
            await wait_until(
                pilot, lambda: state.status == "FINISHED" and state.jobs[first].attempts == 2, timeout=30
            )
            assert app.screen.query_one(JobTable).row_count == 4
    finally:
        finish(app)
    assert [a["status"] for a in store_jobs(auppath, 2)[1]["attempts"]] == ["FINISHED", "FINISHED"]


async def test_readonly_watch_offers_neither_resume_nor_rerun(tmp_path):
    auppath = two_experiments(tmp_path)
    app = AupApp(auppath, connector=TinyDBConnector(auppath), watch=1, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen) and app.screen.state.eid == 1)
        await wait_until(pilot, lambda: app.screen.state.status == "FAILED")
        await pilot.pause()
        assert "Resume" not in footer_keys(app) and "Resume experiment" not in palette_names(app)
        await pilot.press("R")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)


async def test_aup_tui_resume_opens_the_dashboard_live_with_the_earlier_jobs_shown(tmp_path):
    from aup_tui_backends.resume import plan_resume

    auppath = two_experiments(tmp_path)
    connector = TinyDBConnector(auppath)
    app = AupApp(auppath, connector=connector, plan=plan_resume(connector, 1))  # as `aup-tui resume 1`
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: live_dashboard(app) is not None)
            state = app.screen.state
            assert state.eid == 1 and 1 in {
                r.config.get("x") for r in state.jobs.values()
            }  # shown from the start
            await wait_until(pilot, lambda: state.status == "FINISHED", timeout=30)
            assert state.done == 4 and len(state.jobs) == 4
    finally:
        finish(app)
