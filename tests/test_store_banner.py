"""The dashboard's banner for a store that can't be written: it stays until the store is back."""

from __future__ import annotations

from aup_tui_backends.events import ExperimentStarted, StoreProblem
from scenes import CLOCK, T0

from aup_tui.app import AupApp
from aup_tui.state import ExperimentState


async def test_store_full_banner_stays_until_writes_succeed_again(tmp_path):
    st = ExperimentState()
    st.apply([ExperimentStarted(eid=1, name="r", n_samples=4, target="max", resource="cpu", time=T0)])
    aup = tmp_path / ".aup"
    aup.mkdir()
    app = AupApp(str(aup), state=st, clock=CLOCK, find=False)
    down = StoreProblem(
        message="store can't be written: No space left on device on /x/jobs-0.json.log; "
        "2 results waiting — free space",
        eid=1,
        level="error",
        path="/x",
        pending=2,
    )
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = app.screen
        screen.apply_changes(screen.state.apply([down]))
        await pilot.pause()
        banner = [n for n in app._notifications if n.message.startswith("store can't be written")]
        assert len(banner) == 1 and banner[0].severity == "error" and banner[0].timeout >= 3600
        assert any("2 results waiting" in str(t.render()) for t in screen.query("Toast"))
        up = StoreProblem(message="store can be written again: results saved, carrying on", eid=1, ok=True)
        screen.apply_changes(screen.state.apply([up]))
        await pilot.pause()
        assert [n.message for n in app._notifications] == [up.message]
