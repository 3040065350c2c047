"""The experiment picker: whole names (cut with … only when the terminal is too narrow), status,
best, jobs finished/total, start; space marks experiments and c compares them."""

from __future__ import annotations

from scenes import CLOCK, T0, picker_rows
from screens_support import wait_until
from textual.widgets import DataTable

from aup_tui.app import AupApp
from aup_tui.screens.compare import CompareScreen
from aup_tui.screens.picker import PickerScreen

LONG = "resnet50-cifar10-lr-warmup-sweep"


def rows_with_a_long_name() -> list[dict]:
    rows = picker_rows()
    rows[1]["name"] = LONG
    return rows


def shown(app) -> dict[str, list[str]]:
    """Each row's cells as the table draws them (eid → text of each cell, cropped to its column)."""
    table = app.screen.query_one(DataTable)
    out = {}
    for y in range(table.row_count):
        line = table.render_line(y + 1).text  # line 0 is the header
        out[str(table.coordinate_to_cell_key((y, 0)).row_key.value)] = line
    return out


async def test_a_long_name_is_shown_whole_with_status_best_jobs_and_start():
    app = AupApp(picker_rows=rows_with_a_long_name(), clock=CLOCK, find=False)
    async with app.run_test(size=(120, 24)) as pilot:
        await pilot.pause()
        row = shown(app)["2"]
        assert LONG in row
        assert "stopped" in row and "0.9812 (77)" in row and "30/50" in row and "1h ago" in row
        assert "18/40" in shown(app)["3"]  # finished of all the jobs the experiment will run


async def test_a_narrow_terminal_cuts_the_name_with_an_ellipsis():
    app = AupApp(picker_rows=rows_with_a_long_name(), clock=CLOCK, find=False)
    async with app.run_test(size=(70, 24)) as pilot:
        await pilot.pause()
        row = shown(app)["2"]
        assert LONG not in row and "resnet50" in row and "…" in row
        assert "0.9812 (77)" in row  # the other columns keep their room


async def test_space_marks_and_c_compares_the_marked_experiments():
    app = AupApp(picker_rows=picker_rows(), clock=CLOCK, find=False)
    async with app.run_test(size=(100, 30)) as pilot:
        picker = app.screen
        assert isinstance(picker, PickerScreen)
        await pilot.press("c")  # nothing marked yet: it says how
        await pilot.pause()
        assert not isinstance(app.screen, CompareScreen)
        assert any("mark two or more" in n.message for n in app._notifications)
        await pilot.press("space")  # marks experiment 3 (newest first) and moves down
        await pilot.press("space")  # and 2
        assert picker.marked == {2, 3}
        assert "●" in shown(app)["3"] and "●" in shown(app)["2"] and "●" not in shown(app)["1"]
        await pilot.press("k", "space")  # unmark 2 again
        assert picker.marked == {3}
        await pilot.press("j", "space", "c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen))
        assert app.screen.eids == [1, 3]
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is picker)


async def test_start_shows_how_long_ago():
    rows = picker_rows()
    rows[0]["start"] = T0 - 3 * 86400
    app = AupApp(picker_rows=rows, clock=CLOCK, find=False)
    async with app.run_test(size=(100, 24)) as pilot:
        await pilot.pause()
        assert "3d ago" in shown(app)["1"]


def test_picker_with_a_long_name_and_two_marked_snapshot(snap_compare):
    app = AupApp(picker_rows=rows_with_a_long_name(), clock=CLOCK, find=False)
    assert snap_compare(app, press=["space", "space"], terminal_size=(80, 16))
