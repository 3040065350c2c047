"""The picker opens an experiment by key or by its palette entry (the app shows the dashboard)."""

from __future__ import annotations

from pathlib import Path

from aup_tui_backends.setup import init_aup
from aup_tui_backends.store import TinyDBConnector
from screens_support import wait_until
from textual.command import CommandPalette

from aup_tui.app import AupApp
from aup_tui.screens.dashboard import DashboardScreen
from aup_tui.screens.picker import PickerScreen


def finished_experiments(tmp_path: Path, names: tuple[str, ...]) -> str:
    auppath = str(tmp_path / ".aup")
    init_aup(auppath, cpu=1)
    conn = TinyDBConnector(auppath)
    for name in names:
        eid = conn.start_experiment("me", name, {}, n_samples=1, target="max", workingdir=str(tmp_path))
        jid = conn.new_jid()
        conn.start_job(eid, jid, {"x": 1}, 1, "cpu:0", 1)
        conn.end_job(eid, jid, 0.5, "FINISHED", values=[0.5])
        conn.end_experiment(eid, "FINISHED", best_jid=jid, best_score=0.5)
    conn.close()
    return auppath


async def test_the_pickers_palette_entry_opens_that_experiment(tmp_path):
    app = AupApp(finished_experiments(tmp_path, ("first", "second")))
    async with app.run_test(size=(80, 24)) as pilot:
        assert isinstance(app.screen, PickerScreen)
        await wait_until(pilot, lambda: app.screen.rows is not None)
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"Experiment 1")
        await pilot.pause(0.4)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await wait_until(pilot, lambda: app.screen.state.name == "first")
