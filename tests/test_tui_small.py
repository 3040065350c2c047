"""The smaller dashboard fixes (issue 12, item 13): F1 opens help wherever `?` does, an empty filter
result says so, the GPU panel shrinks to one line on a machine without GPUs, and the score plot
has a labelled y axis with ticks and counts the early-stopped jobs."""

from __future__ import annotations

import time

import pytest
from aup_tui_backends.events import JobStopped
from aup_tui_backends.monitors.gpu import GPUMonitor
from aup_tui_backends.status import JobStatus
from fake_nvml import FakeGPU, FakeNVML
from panel_scenes import panels_app
from scenes import CLOCK, T0, dashboard_app, demo_state

from aup_tui.app import AupApp
from aup_tui.monitoring import Monitoring
from aup_tui.screens.dashboard import DashboardScreen
from aup_tui.screens.help import HelpScreen
from aup_tui.widgets.gpu_panel import GPUPanel
from aup_tui.widgets.job_table import JobTable
from aup_tui.widgets.score_plot import ScorePlot, y_ticks

SMALL = (80, 24)
WIDE = (200, 50)


# -- F1 ------------------------------------------------------------------------------------------


async def test_f1_opens_and_closes_help_even_while_typing_a_filter():
    app = dashboard_app()
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        rows = {key: description for _, key, description in app.screen.rows}
        assert rows["?"] == "Help (or f1)"  # the help says so itself
        await pilot.press("f1")
        assert isinstance(app.screen, DashboardScreen)
        await pilot.press("slash", "a")  # in the filter box `?` is a character to type; F1 is not
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
        assert app.screen.query_one("#filter").value == "a"


# -- an empty filter result ----------------------------------------------------------------------


def no_match(app) -> str | None:
    """The empty-result line, None while it is hidden."""
    line = app.screen.query_one("#no-match")
    return str(line.render()) if line.display else None


async def test_a_filter_that_matches_nothing_says_so_and_escape_brings_the_jobs_back():
    app = dashboard_app()
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("slash", *"xyz", "enter")
        await pilot.pause()
        assert no_match(app) == "no jobs match 'xyz' — esc clears the filter"
        assert app.screen.query_one(JobTable).row_count == 0
        await pilot.press("escape")
        await pilot.pause()
        assert no_match(app) is None and app.screen.query_one(JobTable).row_count == 24
        await pilot.press("slash", *"cpu", "enter")  # matches: nothing to say
        await pilot.pause()
        assert no_match(app) is None


async def test_a_status_filter_that_empties_as_jobs_end_says_so():
    """`f` to running jobs; the two running jobs then stop: the table empties and says why."""
    state = demo_state()
    app = AupApp(state=state, clock=CLOCK, find=False)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("f")  # running
        await pilot.pause()
        assert app.screen.query_one(JobTable).row_count == 2 and no_match(app) is None
        running = [jid for jid, row in state.jobs.items() if row.status == JobStatus.RUNNING]
        stops = [JobStopped(eid=3, jid=jid, reason="by hand", time=T0 + 700) for jid in running]
        app.screen.apply_changes(state.apply(stops))
        await pilot.pause()
        assert no_match(app) == "no running jobs — esc clears the filter, f shows the next status"


# -- no GPU here ----------------------------------------------------------------------------------


def gpu_panel(app) -> GPUPanel:
    return app.screen.query_one(GPUPanel)


@pytest.mark.parametrize("size", [WIDE, SMALL, (100, 40)], ids=["wide", "small", "tall"])
async def test_without_gpus_the_panel_is_one_line_saying_why(size):
    app = panels_app(gpus=False, nodes=False)
    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.2)
        panel = gpu_panel(app)
        assert panel.has_class("-no-gpu") and panel.region.height == 1
        text = "no GPUs: NVML Shared Library Not Found"
        assert panel.render().plain == text
        if size != WIDE:  # beside the nodes: as wide as it says, the nodes get the rest
            assert panel.region.width == len(text) + 2


async def test_a_node_with_gpus_keeps_the_panel_boxed():
    app = panels_app(gpus=False, nodes=True)  # no local NVML, but node 1 has two GPUs
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause(0.2)
        panel = gpu_panel(app)
        assert not panel.has_class("-no-gpu") and panel.region.height > 3


async def test_no_nvml_through_the_real_monitor_takes_one_line():
    nvml = FakeNVML([FakeGPU()])
    nvml.init_error = nvml.NVMLError_LibraryNotFound()
    app = AupApp(state=demo_state(), clock=CLOCK, find=False)
    app.monitoring = Monitoring(gpu=GPUMonitor(nvml=nvml, interval=0.05))
    async with app.run_test(size=WIDE) as pilot:
        deadline = time.monotonic() + 10
        while not gpu_panel(app).has_class("-no-gpu") and time.monotonic() < deadline:
            await pilot.pause(0.05)
        await pilot.pause(0.1)
        panel = gpu_panel(app)
        assert panel.region.height == 1, panel.region
        assert panel.render().plain == "no GPUs: NVML Shared Library Not Found"


# -- the score plot's y axis ----------------------------------------------------------------------


def axis_labels(plot: ScorePlot) -> list[str]:
    """The y axis's labels, top to bottom: what stands left of each ┤ (a tick) or │ (no tick)."""
    rows = plot.render().plain.splitlines()[:-1]  # the legend last
    return [row.split("┤" if "┤" in row.split("│")[0] else "│", 1)[0].strip() for row in rows]


def tick_labels(plot: ScorePlot) -> list[str]:
    rows = plot.render().plain.splitlines()[:-1]
    return [row.split("┤", 1)[0].strip() for row in rows if "┤" in row]


async def test_the_y_axis_has_ticks_between_the_extremes_and_a_label():
    app = dashboard_app()
    async with app.run_test(size=(100, 50)) as pilot:
        plot = app.screen.query_one(ScorePlot)
        scores = [0.81, 0.93, 0.85, 0.9, 0.88, 0.91, 0.925]
        best = [max(scores[: i + 1]) for i in range(len(scores))]
        plot.set_data(scores, best, maximize=True)
        await pilot.pause(0.6)
        ticks = tick_labels(plot)
        assert ticks[0] == "0.93" and ticks[-1] == "0.81", ticks  # the highest and lowest scores
        assert set(ticks[1:-1]) >= {"0.90", "0.85"}, ticks  # round values between them
        assert "score" in axis_labels(plot)
        # a log axis: decades between, labelled "log" too
        plot.set_data([1e-7, 1e-2, 3e-5], [1e-7, 1e-7, 1e-7], maximize=False)
        await pilot.pause(0.6)
        assert {"0.0001", "1e-05"} <= set(tick_labels(plot)) and "log" in axis_labels(plot)


async def test_a_small_plot_keeps_the_extremes_and_the_label():
    app = dashboard_app()
    async with app.run_test(size=SMALL) as pilot:
        plot = app.screen.query_one(ScorePlot)
        await pilot.pause()
        labels = axis_labels(plot)
        assert labels[0] == "1301.65" and labels[-1] == "3.4662", labels
        assert "score" in labels and "log" in labels


def test_ticks_keep_two_rows_apart_and_one_value_gets_one_tick():
    rows = 9
    ticks = y_ticks(0.0, 100.0, rows, False, lambda v: round((1 - v / 100) * (rows - 1)))
    assert ticks[0] == "100" and ticks[rows - 1] == "0"
    assert all(b - a >= 2 for a, b in zip(sorted(ticks), sorted(ticks)[1:])), ticks
    assert len(ticks) >= 4
    assert y_ticks(2.0, 2.0, rows, False, lambda v: 4) == {4: "2"}


async def test_the_plot_counts_early_stopped_jobs_and_follows_a_new_one():
    state = demo_state()
    app = AupApp(state=state, clock=CLOCK, find=False)
    async with app.run_test(size=SMALL) as pilot:
        plot = app.screen.query_one(ScorePlot)
        await pilot.pause()
        legend = plot.render().plain.splitlines()[-1]
        assert "17 jobs → (+3 stopped early)" in legend, legend
        running = next(jid for jid, row in state.jobs.items() if row.status == JobStatus.RUNNING)
        app.screen.apply_changes(
            state.apply(
                [
                    JobStopped(
                        eid=3,
                        jid=running,
                        reason="median rule",
                        status=JobStatus.EARLY_STOPPED,
                        time=T0 + 700,
                    )
                ]
            )
        )
        await pilot.pause(0.6)
        assert "(+4 stopped early)" in plot.render().plain.splitlines()[-1]
