"""The parameter analysis screen on a store recorded from a real 30-job run
(tests/fixtures/analysis_run): opened from the dashboard with `a` and from the palette, the
parameters sorted by importance with lr first, the score scatter with the best job marked,
why importance is missing with too few jobs; and a snapshot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from aup_tui_backends.store import TinyDBConnector
from screens_support import Host, shown_in_palette, wait_until
from textual.widgets import OptionList, Static

from aup_tui.app import AupApp
from aup_tui.screens.analysis import AnalysisScreen, importance_bar
from aup_tui.screens.dashboard import DashboardScreen
from aup_tui.widgets.parameter_scatter import ParameterScatter

FIXTURE = Path(__file__).parent / "fixtures" / "analysis_run"


@pytest.fixture
def recorded(tmp_path: Path) -> TinyDBConnector:
    """The recorded run's store, copied where the test may write."""
    shutil.copytree(FIXTURE / "aup", tmp_path / ".aup")
    conn = TinyDBConnector(str(tmp_path / ".aup"))
    yield conn
    conn.close()


def note(screen: AnalysisScreen) -> str:
    return str(screen.query_one("#importance-note", Static).render())


async def test_a_opens_the_analysis_of_the_recorded_run(recorded: TinyDBConnector) -> None:
    app = AupApp(connector=recorded, watch=1, find=False)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_until(
            pilot, lambda: isinstance(app.screen, DashboardScreen) and len(app.screen.state.jobs) == 30
        )
        await pilot.press("a")
        await wait_until(pilot, lambda: isinstance(app.screen, AnalysisScreen))
        screen = app.screen
        await wait_until(pilot, lambda: screen.importance is not None, timeout=30)
        assert screen.importance.values, screen.importance.reason
        params = screen.query_one("#parameters", OptionList)
        assert params.get_option_at_index(0).id == "lr"  # the score depends mostly on lr
        assert "PED-ANOVA over 30 finished jobs" in note(screen)
        scatter = screen.query_one(ParameterScatter)
        assert scatter.series is not None and scatter.series.name == "lr"
        assert len(scatter.series.xs) == 30
        best = scatter.series.best
        assert best is not None and scatter.series.ys[best] == max(scatter.series.ys)
        while params.get_option_at_index(params.highlighted).id != "optimizer":
            await pilot.press("down")
        assert scatter.series.name == "optimizer"
        assert scatter.series.categories == ["adam", "rmsprop", "sgd"]  # no parameter_config in watch: sorted
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
        assert "Parameter analysis" in await shown_in_palette(pilot, "parameter anal")


async def test_too_few_jobs_say_why_importance_is_missing() -> None:
    points = [(1, {"x": 0.1}, 1.0), (2, {"x": 0.5}, 2.0), (3, {"x": 0.9}, 1.5)]
    app = Host(lambda: AnalysisScreen("few", points, True, 2))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, AnalysisScreen))
        screen = app.screen
        await wait_until(pilot, lambda: screen.importance is not None)
        assert note(screen) == "no importance: 3 jobs finished with a score: importance needs at least 5"
        assert screen.query_one(ParameterScatter).series.best == 1


def test_importance_bar() -> None:
    assert importance_bar(1.0, 4) == "████"
    assert importance_bar(0.0, 4) == "    "
    assert importance_bar(0.5, 3) == "█▌ "


def test_analysis_snapshot_of_the_recorded_run(snap_compare, recorded: TinyDBConnector) -> None:
    exp = recorded.get_experiment(1)
    points = [(j["jid"], j["config"], j["score"]) for j in recorded.jobs(1) if j.get("score") is not None]
    best = max(points, key=lambda p: p[2])[0]
    space = [
        {"name": "lr", "range": [0.0, 1.0], "type": "float"},
        {"name": "layers", "range": [1, 6], "type": "int"},
        {"name": "optimizer", "range": ["adam", "sgd", "rmsprop"], "type": "choice"},
    ]
    app = Host(lambda: AnalysisScreen(f"Parameter analysis — {exp['name']} #1", points, True, best, space))

    async def computed(pilot) -> None:
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, AnalysisScreen))
        await wait_until(pilot, lambda: pilot.app.screen.importance is not None, timeout=30)
        await pilot.pause()

    assert snap_compare(app, run_before=computed, terminal_size=(110, 30))
