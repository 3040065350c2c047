"""Snapshots built from a store recorded from a real run (tests/fixtures/recorded_run), not from
hand-made state: the dashboard as `aup-tui watch` loads the finished experiment, the problems
screen (`!`) and the detail of the job that failed.

The run: `aup-tui init --cpu 2`, `aup-tui run --headless experiment.json` with `train.py` (two
results a line: loss and accuracy), job 5 stopped with `aup-tui stop --job 5` while it ran, job 3
crashing. The store names the folder the run was recorded in; the tests copy the run to a
temporary folder, point the store at it, and freeze the clock a minute after the run ended.

Regenerate after an intended change with `pytest tests/test_snapshots_recorded.py --snapshot-update`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aup_tui_backends.store import TinyDBConnector
from panel_scenes import no_gpu_snapshot
from screens_support import Host, wait_until

from aup_tui.app import AupApp
from aup_tui.monitoring import StaticMonitoring
from aup_tui.screens.dashboard import DashboardScreen
from aup_tui.screens.job_detail import JobDetailScreen
from aup_tui.widgets.score_plot import ScorePlot

FIXTURE = Path(__file__).parent / "fixtures" / "recorded_run"
RECORDED_IN = "/home/me/recorded-run"  # where the run was recorded (its store says so)
SIZE = (120, 32)


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, utc) -> Iterator[TinyDBConnector]:
    """The recorded run in a folder of its own, the current directory, as its store names it."""
    shutil.copytree(FIXTURE / "aup", tmp_path / ".aup")
    shutil.copytree(FIXTURE / "jobs", tmp_path / "jobs")
    for path in (tmp_path / ".aup").rglob("*"):
        if path.is_file():  # "." rather than the copy's own path: the same text on every machine
            path.write_text(path.read_text().replace(RECORDED_IN, "."))
    monkeypatch.chdir(tmp_path)
    conn = TinyDBConnector(str(tmp_path / ".aup"))
    yield conn
    conn.close()


def frozen_clock(conn: TinyDBConnector) -> Callable[[], float]:
    end = conn.get_experiment(1)["end"]
    return lambda: end + 60.0


def watched(conn: TinyDBConnector) -> AupApp:
    """The app as `aup-tui watch 1` opens it, on a machine without GPUs."""
    app = AupApp(connector=conn, watch=1, clock=frozen_clock(conn), find=False)
    app.monitoring = StaticMonitoring(no_gpu_snapshot(), {})
    return app


async def loaded(pilot) -> None:
    await wait_until(
        pilot, lambda: isinstance(pilot.app.screen, DashboardScreen) and len(pilot.app.screen.state.jobs) == 7
    )
    plot = pilot.app.screen.query_one(ScorePlot)
    # the plot redraws at most every MIN_REDRAW seconds: wait for the redraw with the scores
    await wait_until(pilot, lambda: bool(plot.scores) and plot._pending is None)
    await pilot.pause(0.2)


def test_recorded_run_is_what_the_snapshots_show(recorded: TinyDBConnector) -> None:
    jobs = {job["jid"]: job for job in recorded.jobs(1)}
    assert {jid: job["status"] for jid, job in jobs.items()} == {
        1: "FINISHED",
        2: "FINISHED",
        3: "FAILED",
        4: "FINISHED",
        5: "STOPPED",
        6: "FINISHED",
        7: "FINISHED",
    }
    assert recorded.get_labels(1) == ["accuracy"] and len(jobs[7]["values"]) == 2
    assert "RuntimeError" in Path("jobs/3.1.out").read_text()


def test_dashboard_of_the_recorded_run(snap_compare, recorded: TinyDBConnector) -> None:
    assert snap_compare(watched(recorded), run_before=loaded, terminal_size=SIZE)


def test_problems_of_the_recorded_run(snap_compare, recorded: TinyDBConnector) -> None:
    async def problems(pilot) -> None:
        await loaded(pilot)
        await pilot.press("exclamation_mark")
        await pilot.pause(0.2)

    assert snap_compare(watched(recorded), run_before=problems, terminal_size=SIZE)


def test_failed_job_of_the_recorded_run(snap_compare, recorded: TinyDBConnector) -> None:
    clock = frozen_clock(recorded)
    app = Host(lambda: JobDetailScreen(recorded, 1, 3, poll_interval=0.05, clock=clock))

    async def ended(pilot) -> None:
        await wait_until(
            pilot, lambda: isinstance(pilot.app.screen, JobDetailScreen) and pilot.app.screen.ended
        )
        await pilot.pause(0.2)

    assert snap_compare(app, run_before=ended, terminal_size=SIZE)


async def test_the_label_names_the_value_after_the_score(recorded: TinyDBConnector) -> None:
    # the run reports `#Auptimizer:<loss>,<accuracy>` with multi_res_labels ["accuracy"]
    app = Host(lambda: JobDetailScreen(recorded, 1, 7, poll_interval=0.05, clock=frozen_clock(recorded)))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.ended)
        legend = str(app.screen.query_one("#detail-curve").render()).splitlines()[0]
    assert legend.startswith("score 0.5605") and "accuracy 0.813" in legend, legend


async def test_the_scores_of_a_finished_run_are_plotted_as_it_loads(recorded: TinyDBConnector) -> None:
    app = watched(recorded)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(
            pilot, lambda: isinstance(app.screen, DashboardScreen) and len(app.screen.state.jobs) == 7
        )
        plot = app.screen.query_one(ScorePlot)
        assert plot._pending is None  # not held back by the redraw limit, which is for a stream of scores
        await pilot.pause()
        assert "5&#160;jobs" in app.export_screenshot()  # the legend under the plotted scores
