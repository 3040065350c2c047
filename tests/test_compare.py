"""Compare: two or more experiments picked in the picker, their best-so-far curves on one plot and
their best configs side by side — read from a real TinyDB store on a worker thread."""

from __future__ import annotations

from pathlib import Path

from aup_tui_backends.setup import init_aup
from aup_tui_backends.store import TinyDBConnector
from scenes import CLOCK, picker_rows
from screens_support import wait_until
from textual.widgets import DataTable

from aup_tui.app import AupApp
from aup_tui.screens.compare import ComparedExperiment, CompareScreen, compare_experiment
from aup_tui.screens.picker import PickerScreen
from aup_tui.widgets.compare_plot import ComparePlot

SIZE = (100, 32)


def store_with(tmp_path: Path) -> str:
    """Two finished experiments: `lr-sweep` maximises (scores 0.2, 0.5, 0.4), `momentum` too (0.6, 0.7)."""
    auppath = str(tmp_path / ".aup")
    init_aup(auppath, cpu=1)
    conn = TinyDBConnector(auppath)
    for name, scores, params in (
        ("lr-sweep", (0.2, 0.5, 0.4), ("lr",)),
        ("momentum", (0.6, 0.7), ("lr", "momentum")),
    ):
        eid = conn.start_experiment("me", name, {}, n_samples=4, target="max", workingdir=str(tmp_path))
        best = None
        for i, score in enumerate(scores):
            jid = conn.new_jid()
            config = {p: round(0.1 * (i + 1), 2) for p in params}
            conn.start_job(eid, jid, config, 1, "cpu:0", 1)
            conn.end_job(eid, jid, score, "FINISHED", values=[score])
            if best is None or score > best[1]:
                best = (jid, score)
        assert best is not None
        conn.end_experiment(eid, "FINISHED", best_jid=best[0], best_score=best[1])
    conn.close()
    return auppath


def cells(table: DataTable, row: str) -> list[str]:
    return [str(getattr(c, "plain", c)) for c in table.get_row(row)]


def test_best_so_far_follows_the_target():
    jobs = [
        {"jid": 1, "status": "FINISHED", "score": 3.0, "end": 10, "config": {"x": 1}},
        {"jid": 2, "status": "FAILED", "score": None, "end": 11, "config": {"x": 2}},
        {"jid": 3, "status": "FINISHED", "score": 1.0, "end": 12, "config": {"x": 3}},
        {"jid": 4, "status": "FINISHED", "score": 2.0, "end": 13, "config": {"x": 4}},
    ]
    exp = compare_experiment({"eid": 7, "name": "m", "target": "min", "n_samples": 5}, jobs)
    assert exp.curve == (3.0, 1.0, 1.0)
    assert (exp.best_jid, exp.best_score, exp.best_config) == (3, 1.0, {"x": 3})  # still running
    assert (exp.finished, exp.total) == (3, 5)


async def test_pick_two_in_the_picker_and_compare_them(tmp_path):
    app = AupApp(store_with(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.screen, PickerScreen)
        await wait_until(pilot, lambda: app.screen.rows is not None)
        await pilot.press("space", "space", "c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen))
        screen = app.screen
        await wait_until(pilot, lambda: screen.experiments is not None)
        table = screen.query_one(DataTable)
        assert [str(getattr(c.label, "plain", c.label)) for c in table.columns.values()] == [
            "",
            "1 lr-sweep",
            "2 momentum",
        ]
        assert cells(table, "best")[1:] == ["0.5 (max)", "0.7 (max)"]
        assert cells(table, "jobs")[1:] == ["3/4", "2/4"]
        assert cells(table, "param:lr")[1:] == ["0.2", "0.2"]
        assert cells(table, "param:momentum")[1:] == ["—", "0.2"]  # the first has no such parameter
        plot = screen.query_one(ComparePlot)
        assert [s.values for s in plot.series] == [(0.2, 0.5, 0.5), (0.6, 0.7)]
        text = plot.render().plain
        assert "━━ 1 lr-sweep" in text and "━━ 2 momentum" in text and "3 jobs" in text
        assert "0.7" in text and "0.2" in text  # the y-axis spans both experiments


def scene() -> CompareScreen:
    """The compare screen on fixed data (for the snapshot)."""
    return CompareScreen(
        experiments=[
            ComparedExperiment(
                1,
                "rosenbrock-random",
                "min",
                0.0421,
                14,
                {"x": 0.97, "y": 0.95},
                20,
                20,
                (3.1, 1.2, 1.2, 0.8, 0.8, 0.31, 0.31, 0.31, 0.2, 0.0421),
            ),
            ComparedExperiment(
                2,
                "rosenbrock-bayesian",
                "min",
                0.0107,
                9,
                {"x": 1.01, "y": 1.02, "kappa": 2.5},
                12,
                20,
                (2.5, 0.9, 0.4, 0.4, 0.05, 0.0107),
            ),
            ComparedExperiment(3, "rosenbrock-grid", "min", 0.64, 4, {"x": 0.5, "y": 0.5}, 4, 4, (5.0, 0.64)),
        ]
    )


def test_compare_screen_snapshot(snap_compare):
    async def compare(pilot) -> None:
        await pilot.app.push_screen(scene())
        await pilot.pause()

    app = AupApp(picker_rows=picker_rows(), clock=CLOCK, find=False)
    assert snap_compare(app, run_before=compare, terminal_size=(100, 32))
