"""The dashboard on deterministic data: every key, sorting, filtering, themes, palette, state model."""

from __future__ import annotations

import json

import pytest
from aup_tui_backends.events import (
    ExperimentFinished,
    ExperimentStarted,
    JobFailed,
    JobFinished,
    JobIntermediate,
    JobQueued,
    JobStarted,
    JobStopped,
    PassiveResultAccepted,
    PassiveResultWanted,
)
from scenes import CLOCK, T0, dashboard_app, demo_state
from screens_support import shown_in_palette

from aup_tui.app import AupApp
from aup_tui.screens.dashboard import DashboardScreen
from aup_tui.state import ExperimentState
from aup_tui.widgets.header import ExperimentHeader
from aup_tui.widgets.job_table import JobTable
from aup_tui.widgets.score_plot import ScorePlot

SIZE = (100, 30)


def table(app) -> JobTable:
    return app.screen.query_one(JobTable)


# -- the state model ---------------------------------------------------------------------------


def test_state_follows_engine_events():
    st = ExperimentState()
    ch = st.apply([ExperimentStarted(eid=1, name="r", n_samples=4, target="min", resource="cpu", time=T0)])
    assert ch.header and st.status == "RUNNING" and st.start == T0
    ch = st.apply(
        [
            JobQueued(eid=1, jid=1, config={"x": 1}),
            JobStarted(eid=1, jid=1, rid=1, resource="cpu:a", attempt=1, time=T0 + 1),
            JobQueued(eid=1, jid=2, config={"x": 2}),
            JobStarted(eid=1, jid=2, rid=2, resource="cpu:b", attempt=1, time=T0 + 1),
        ]
    )
    assert ch.jids == {1, 2} and st.running == 2
    st.apply([JobIntermediate(eid=1, jid=1, index=0, values=(5.0,))])
    assert st.jobs[1].score == 5.0
    ch = st.apply(
        [
            JobFinished(eid=1, jid=1, score=3.0, time=T0 + 5),
            JobFailed(eid=1, jid=2, error="boom", will_retry=True),
        ]
    )
    assert ch.plot and st.best_jid == 1 and st.done == 1 and st.jobs[2].status == "RUNNING"
    st.apply([JobFailed(eid=1, jid=2, error="boom")])
    assert st.failed == 1 and st.running == 0
    st.apply(
        [
            JobStarted(eid=1, jid=3, rid=1, resource="cpu:a", attempt=1),
            JobStopped(eid=1, jid=3, reason="stopped by user", score=None),
        ]
    )
    assert st.stopped == 1
    st.apply(
        [JobStarted(eid=1, jid=4, rid=1, resource="cpu:a", attempt=1), JobFinished(eid=1, jid=4, score=1.0)]
    )
    assert (st.best_jid, st.best_score) == (4, 1.0)
    assert st.best_so_far() == [3.0, 1.0]
    ch = st.apply([ExperimentFinished(eid=1, status="FINISHED", best_jid=4, best_score=1.0)])
    assert ch.ended and not st.is_live


def test_state_tracks_passive_requests():
    st = ExperimentState(eid=1)
    ch = st.apply(
        [
            JobStarted(eid=1, jid=7, rid=1, resource="passive:me", attempt=1),
            PassiveResultWanted(eid=1, jid=7, command="cmd", workingdir="/w", config_path="/w/jobs/7.json"),
        ]
    )
    assert [w.jid for w in ch.passive] == [7] and st.jobs[7].status == "WAITING" and 7 in st.waiting
    st.apply([PassiveResultAccepted(eid=1, jid=7), JobFinished(eid=1, jid=7, score=2.0)])
    assert not st.waiting and st.jobs[7].status == "FINISHED"


def test_state_merges_store_snapshots_by_diff():
    st = ExperimentState(eid=2)
    exp = {
        "eid": 2,
        "name": "w",
        "status": "RUNNING",
        "n_samples": 3,
        "target": "max",
        "start": T0,
        "workingdir": "/w",
        "script": "job.sh",
    }
    jobs = [
        {
            "jid": 1,
            "status": "FINISHED",
            "config": {"x": 1},
            "resource": "cpu:a",
            "score": 0.5,
            "start": T0,
            "end": T0 + 1,
            "attempts": [{}],
            "error": None,
        },
        {
            "jid": 2,
            "status": "WAITING",
            "config": {"x": 2},
            "resource": "passive:me",
            "score": None,
            "start": T0,
            "end": None,
            "attempts": [{}],
            "error": None,
        },
    ]
    ch = st.merge_store(exp, jobs)
    assert ch.jids == {1, 2} and ch.plot and st.best_jid == 1
    assert ch.passive[0].command == "cd /w && ./job.sh jobs/2.json"
    ch = st.merge_store(exp, jobs)
    assert not ch.jids and not ch.plot  # nothing changed: nothing to redraw
    ch = st.merge_store({**exp, "status": "STOPPED"}, jobs)
    assert ch.ended and ch.header


# -- the dashboard on demo data --------------------------------------------------------------


async def test_dashboard_shows_header_table_plot_and_panels():
    app = dashboard_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        header = screen.query_one(ExperimentHeader).render().plain
        assert "rosenbrock" in header and "RUNNING" in header and "12:34" in header
        assert "best (min) 3.4662 job 16" in header and "22/40" in header
        assert table(app).row_count == 24
        assert screen.query_one(ScorePlot).scores
        # the GPU and node panels (issue 4) have their places
        assert screen.query_one("#gpu-panel").region.height >= 1
        assert screen.query_one("#nodes-panel").region.height >= 1


async def test_j_k_g_G_move_the_cursor():
    app = dashboard_app()
    async with app.run_test(size=SIZE) as pilot:
        t = table(app)
        assert t.selected_jid == 1
        await pilot.press("j", "j")
        assert t.selected_jid == 3
        await pilot.press("k")
        assert t.selected_jid == 2
        await pilot.press("G")
        assert t.selected_jid == 24
        await pilot.press("g")
        assert t.selected_jid == 1


async def test_sorting_by_column_key_and_header_click():
    app = dashboard_app()
    async with app.run_test(size=SIZE) as pilot:
        t = table(app)
        t.sort_by("score", reverse=False)
        await pilot.pause()
        order = t.shown_jids
        scores = [app.screen.state.jobs[j].score for j in order]
        scored = [s for s in scores if s is not None]
        assert scored == sorted(scored) and scores[-1] is None  # jobs without a score last
        assert order[0] == 16  # the best (min) job first
        t.sort_by("score")  # same column again: reversed
        await pilot.pause()
        scored = [
            app.screen.state.jobs[j].score for j in t.shown_jids if app.screen.state.jobs[j].score is not None
        ]
        assert scored == sorted(scored, reverse=True)
        await pilot.press("o")  # next column: duration
        assert t.sort_column == "duration"
        t.sort_by("id", reverse=False)
        await pilot.pause()
        assert t.shown_jids == list(range(1, 25))
        await pilot.click("#jobs", offset=(40, 1))  # the header row: "score" column
        await pilot.pause()
        assert t.sort_column == "score"


async def test_slash_filters_by_text_and_escape_clears():
    app = dashboard_app()
    async with app.run_test(size=SIZE) as pilot:
        t = table(app)
        await pilot.press("/")
        assert app.focused.id == "filter"
        await pilot.press(*"failed")
        await pilot.press("enter")
        await pilot.pause()
        assert t.shown_jids == [11, 22]
        assert app.focused is t
        await pilot.press("escape")
        await pilot.pause()
        assert t.row_count == 24 and not app.screen.query_one("#filter").display


async def test_status_filter_cycles_with_f_and_updates_incrementally():
    app = dashboard_app()
    async with app.run_test(size=SIZE) as pilot:
        t = table(app)
        await pilot.press("f")
        assert t.filter_status == "RUNNING" and t.shown_jids == [23, 24]
        await pilot.press("f")
        assert t.filter_status == "FINISHED" and 23 not in t.shown_jids
        # a running job finishes while the filter shows finished jobs: its row appears
        ch = app.screen.state.apply([JobFinished(eid=3, jid=23, score=0.5)])
        app.screen.apply_changes(ch)
        await pilot.pause()
        assert 23 in t.shown_jids
        await pilot.press("f", "f")
        assert t.filter_status == "STOPPED" and set(t.shown_jids) == {7, 14, 21}


async def test_events_update_only_changed_rows():
    app = dashboard_app()
    async with app.run_test(size=SIZE) as pilot:
        t = table(app)
        calls = []
        original = t._set_cell
        t._set_cell = lambda *a, **k: (calls.append(a[:2]), original(*a, **k))  # type: ignore[method-assign]
        rebuilds = []
        t.rebuild = lambda: rebuilds.append(1)  # type: ignore[method-assign]
        st = app.screen.state
        app.screen.apply_changes(st.apply([JobFinished(eid=3, jid=24, score=0.01)]))
        await pilot.pause()
        assert {key for _, key in calls} <= {"status", "score", "duration"}
        assert {row for row, _ in calls} == {"24"} and not rebuilds
        assert "0.01" in str(t.get_cell("24", "score")) and "finished" in str(t.get_row("24")[1])
        header = app.screen.query_one(ExperimentHeader).render().plain
        assert "best (min) 0.01 job 24" in header
        app.screen.apply_changes(st.apply([JobQueued(eid=3, jid=25, config={"x": 1.0, "y": 2.0})]))
        await pilot.pause()
        assert t.row_count == 25


async def test_t_cycles_themes_and_remembers_the_choice(tmp_path):
    aup = tmp_path / ".aup"
    aup.mkdir()
    app = AupApp(str(aup), state=demo_state(), clock=CLOCK, find=False)
    async with app.run_test(size=SIZE) as pilot:
        assert app.theme == "aup-dark"
        await pilot.press("t")
        assert app.theme == "aup-light"
        await pilot.press("t")
        assert app.theme == "aup-high-contrast"
        await app.workers.wait_for_complete()
    assert json.loads((aup / "tui.json").read_text())["theme"] == "aup-high-contrast"
    again = AupApp(str(aup), state=demo_state(), clock=CLOCK, find=False)
    assert again.theme == "aup-high-contrast"


@pytest.mark.parametrize("name", ["aup-dark", "aup-light", "aup-high-contrast"])
async def test_each_theme_defines_readable_status_colours(name):
    app = dashboard_app(theme=name)
    async with app.run_test(size=SIZE):
        variables = app.theme_variables
        for status in ("running", "waiting", "finished", "failed", "stopped", "early-stopped", "interrupted"):
            assert variables[f"status-{status}"].startswith("#")


async def test_question_mark_toggles_help_and_ctrl_p_lists_every_action():
    app = dashboard_app()
    async with app.run_test(size=SIZE) as pilot:
        from aup_tui.screens.help import HelpScreen

        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = {(key, desc) for _, key, desc in app.screen.rows}
        for key in ("s", "S", "/", "q", "t", "?"):
            assert any(k == key for k, _ in keys), key
        await pilot.press("question_mark")
        assert isinstance(app.screen, DashboardScreen)
        await pilot.press("ctrl+p")
        await pilot.pause()
        from textual.command import CommandPalette

        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"next theme")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.theme == "aup-light"


def palette_titles(app) -> list[str]:
    """What the palette would offer on the current screen: the app's commands and the screen's."""
    names = [command.title for command in app.get_system_commands(app.screen)]
    for provider in app.screen.COMMANDS:
        names += [command.name for command in provider(app.screen).commands()]
    return names


async def test_palette_commands_cover_the_bindings():
    app = dashboard_app(waiting=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("escape")  # the waiting job's form: the dashboard under it
        assert isinstance(app.screen, DashboardScreen)
        names = palette_titles(app)
    for wanted in (
        "Quit",
        "Help: keys",
        "Next theme",
        "Stop selected job",
        "Stop experiment",
        "Open selected job",
        "Filter jobs",
        "Sort jobs by score",
        "Show failed jobs",
        "Answer waiting passive job",
    ):
        assert wanted in names


async def test_the_palette_of_a_finished_experiment_offers_no_stop():
    app = dashboard_app(status="FINISHED", running=0)
    async with app.run_test(size=SIZE) as pilot:
        shown = await shown_in_palette(pilot, "stop")
        assert not any(name.startswith("Stop") for name in shown), shown
        assert "Show stopped jobs" in shown  # the palette does search: only stopping is gone
        assert "Answer waiting passive job" not in palette_titles(app)  # nothing waits
    running = dashboard_app()
    async with running.run_test(size=SIZE) as pilot:
        shown = await shown_in_palette(pilot, "stop")
        assert "Stop experiment" in shown and "Stop selected job" in shown


async def test_the_pickers_palette_offers_its_own_actions():
    from scenes import picker_app

    app = picker_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        shown = await shown_in_palette(pilot, "exp")
        assert "Open selected experiment" in shown
        assert any(name.startswith("Experiment 3:") for name in shown), shown
        names = palette_titles(app)
        assert "Quit" in names and "Next theme" in names  # the app's commands everywhere
        assert "Filter jobs" not in names and "Stop experiment" not in names  # not the dashboard's
        assert "Reload experiments" not in names  # rows given: no store to reload from


async def test_the_node_details_palette_probes_that_node():
    from panel_scenes import node_detail_app

    from aup_tui.screens.node_detail import NodeDetailScreen

    app = node_detail_app("node 3")
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(40):
            if isinstance(app.screen, NodeDetailScreen):
                break
            await pilot.pause(0.05)
        assert isinstance(app.screen, NodeDetailScreen)
        shown = await shown_in_palette(pilot, "probe")
        assert shown[0] == "Probe node 3 now", shown
        assert "Probe nodes now" not in shown  # the dashboard's, underneath: not offered here
        await pilot.press("ctrl+p", *"probe node 3")
        await pilot.pause(0.4)
        await pilot.press("enter")
        await pilot.pause()
        assert app.monitoring.retried == ["node 3"]


@pytest.mark.parametrize("how", ["key", "palette", "textual theme picker"])
async def test_a_theme_change_persists_however_it_is_made(tmp_path, how):
    aup = tmp_path / ".aup"
    aup.mkdir()
    app = AupApp(str(aup), state=demo_state(), clock=CLOCK, find=False)
    async with app.run_test(size=SIZE) as pilot:
        if how == "key":
            await pilot.press("t", "t")
        elif how == "palette":
            await pilot.press("ctrl+p", *"theme: high")
            await pilot.pause(0.4)
            await pilot.press("enter")
        else:
            await pilot.press("ctrl+p", *"theme")
            await pilot.pause(0.4)
            await pilot.press("enter")  # Textual's "Theme": its own list of every theme
            await pilot.pause(0.3)
            await pilot.press(*"aup-high")
            await pilot.pause(0.4)
            await pilot.press("enter")
        await pilot.pause()
        assert app.theme == "aup-high-contrast"
        await app.workers.wait_for_complete()
        # the table repaints its status cells in the new theme's colours
        assert table(app).get_row("24")[1].style == app.theme_variables["status-running"]
    assert json.loads((aup / "tui.json").read_text())["theme"] == "aup-high-contrast"


class _RunningHere:
    """Just enough of an Experiment this process runs, for the quit question."""

    def __init__(self) -> None:
        self.stopping = False
        self.status = "RUNNING"

    def stop(self) -> None:
        self.stopping = True


@pytest.mark.parametrize(("keys", "choice", "code"), [(("q", "y"), "stop", 130), (("q", "n"), "keep", 0)])
async def test_q_while_an_experiment_runs_here_asks_and_y_or_n_answers(keys, choice, code):
    import threading
    from types import SimpleNamespace

    from aup_tui.screens.confirm import ConfirmScreen

    app = dashboard_app()
    app.experiment, app.experiment_config = _RunningHere(), SimpleNamespace(name="rosenbrock")
    done = threading.Event()
    app.exp_thread = threading.Thread(target=done.wait, daemon=True)
    app.exp_thread.start()
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("q")
            assert isinstance(app.screen, ConfirmScreen)
            assert "Experiment 'rosenbrock' is still running (2 job(s) now)" in app.screen.question
            buttons = [str(b.label) for b in app.screen.query("Button")]
            assert buttons == ["Stop & quit (y)", "Keep running (n)", "Cancel"]
            await pilot.press("enter")  # focus starts on Cancel: a stray enter stays
            assert isinstance(app.screen, DashboardScreen) and app.quit_choice is None
            await pilot.press("q", "escape")
            assert isinstance(app.screen, DashboardScreen)
            await pilot.press(*keys)
        assert app.quit_choice == choice and app.return_value == code
        assert app.experiment.stopping is (choice == "stop")
    finally:
        done.set()


async def test_stop_keys_are_off_without_a_running_source_and_q_quits():
    app = dashboard_app(source=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        await pilot.press("S")
        assert isinstance(app.screen, DashboardScreen)  # read-only: no confirm dialog
        await pilot.press("enter")  # no store behind the demo: a notice, no crash
        await pilot.press("q")
    assert app.return_value == 0


async def test_s_and_S_confirm_naming_the_job_and_n_cancels():
    from aup_tui.screens.confirm import ConfirmScreen

    app = dashboard_app()
    source = app.demo_source
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")  # job 1 has finished: nothing to stop
        assert isinstance(app.screen, DashboardScreen) and not source.calls
        await pilot.press("G", "s")
        assert isinstance(app.screen, ConfirmScreen)
        assert "Stop job 24 (x=0.1008 y=2.501) on cpu:cpu1?" in app.screen.question
        await pilot.press("n")
        await pilot.press("s", "y")
        await app.workers.wait_for_complete()
        await pilot.press("S")
        assert "Stop experiment 'rosenbrock' #3" in app.screen.question
        await pilot.press("y")
        await app.workers.wait_for_complete()
        assert source.calls == [("stop_job", 24), ("stop_experiment",)]


async def test_a_waiting_passive_job_opens_its_form_and_escape_leaves_a_badge():
    from aup_tui.screens.passive_form import PassiveForm

    app = dashboard_app(waiting=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, PassiveForm) and app.screen.request.jid == 24
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
        header = app.screen.query_one(ExperimentHeader).render().plain
        assert "job 24 waiting for you" in header
        await pilot.press("p")
        assert isinstance(app.screen, PassiveForm)
        await pilot.press(*"0.5", "ctrl+s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert ("submit", 24, "0.5") in app.demo_source.calls
        assert isinstance(app.screen, DashboardScreen) and not app.screen.state.waiting


async def test_score_plot_draws_points_and_best_line_on_a_log_axis():
    app = dashboard_app()
    async with app.run_test(size=SIZE) as pilot:
        plot = app.screen.query_one(ScorePlot)
        text = plot.render().plain
        assert any("\u2801" <= ch <= "\u28ff" for ch in text)  # braille dots
        assert "log" in text and "best-so-far (min)" in text and "17 jobs" in text
        # infinities and a single value do not break it
        plot.set_data([float("inf"), 2.0, 2.0], [float("inf"), 2.0, 2.0], maximize=False)
        await pilot.pause(0.6)
        assert "2" in plot.render().plain


async def test_x_puts_the_score_plot_over_time_since_the_start(tmp_path):
    """Three jobs finish 10 s, 20 s and 100 s in: over job order the first best-so-far step ends
    half-way; over time it ends a fifth of the way, and the axis says how long it spans."""
    st = ExperimentState(eid=1, name="t", status="FINISHED", target="min")
    st.start = T0
    for jid, (score, t) in enumerate([(3.0, 10.0), (2.0, 20.0), (1.0, 100.0)], start=1):
        st.apply(
            [
                JobStarted(eid=1, jid=jid, rid=1, resource="cpu:cpu0", attempt=1, time=T0),
                JobFinished(eid=1, jid=jid, score=score, values=(score,), time=T0 + t),
            ]
        )
    aup = tmp_path / ".aup"
    aup.mkdir()
    app = AupApp(str(aup), state=st, clock=CLOCK, find=False)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        plot = app.screen.query_one(ScorePlot)

        def top_row_end() -> float:
            """Where the top row (score 3 and its best-so-far step) stops, as a share of the plot."""
            rows = plot.render().plain.splitlines()
            dots = rows[0].split("┤", 1)[1]
            return len(dots.rstrip()) / len(dots)

        assert "3 jobs →" in plot.render().plain
        assert 0.4 < top_row_end() < 0.6
        await pilot.press("x")
        await pilot.pause()
        assert plot.x_axis == "time"
        assert "time → 1m40s" in plot.render().plain
        assert 0.15 < top_row_end() < 0.3
        assert any("time since the start" in str(t.render()) for t in app.screen.query("Toast"))
        await app.workers.wait_for_complete()
    # the choice is remembered in .aup for the next start
    assert json.loads((aup / "tui.json").read_text())["plot_axis"] == "time"
    again = AupApp(str(aup), state=st, clock=CLOCK, find=False)
    async with again.run_test(size=SIZE) as pilot:
        plot = again.screen.query_one(ScorePlot)
        assert plot.x_axis == "time"
        await pilot.press("x")
        assert plot.x_axis == "order" and "3 jobs →" in plot.render().plain


async def test_header_keeps_the_waiting_badge_when_the_name_is_long():
    st = demo_state(waiting=True)
    st.name = "a-very-long-experiment-name-that-does-not-fit-in-eighty-columns-at-all"
    app = AupApp(state=st, clock=CLOCK, find=False)
    async with app.run_test(size=(80, 24)):
        lines = app.screen.query_one(ExperimentHeader).render().plain.splitlines()
        assert all(len(line) <= 78 for line in lines)
        assert lines[0].endswith("job 24 waiting for you · p ")


def test_bridge_wakes_the_app_once_per_batch_from_engine_threads():
    import threading

    from aup_tui_backends.events import EventBus, JobOutput

    from aup_tui.sources import EngineBridge

    bus = EventBus()
    bridge = EngineBridge(bus)
    posted = []

    class Target:
        def post_message(self, message):
            posted.append(message)

    bus.publish(JobQueued(eid=1, jid=1, config={}))  # before the app is there: kept
    bridge.attach(Target())
    assert len(posted) == 1
    threads = [
        threading.Thread(
            target=lambda i=i: [
                bus.publish(JobIntermediate(eid=1, jid=i, index=k, values=(1.0,))) for k in range(50)
            ]
        )
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bus.publish(JobOutput(eid=1, jid=1, line="noise"))  # not subscribed: the engine can skip these
    assert len(posted) == 1  # still one wake-up: the batch is drained once
    events = bridge.drain()
    assert len(events) == 1 + 4 * 50
    bus.publish(JobFinished(eid=1, jid=1, score=1.0))
    assert len(posted) == 2
    bridge.close()
    bus.publish(JobFinished(eid=1, jid=2, score=1.0))
    assert len(posted) == 2 and len(bridge.drain()) == 1
