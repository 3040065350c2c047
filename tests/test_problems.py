"""What went wrong stays one key away: the state keeps it, the header counts it, `!` lists it
newest first and opens a failed job; marking a passive job failed asks first."""

from __future__ import annotations

import pytest
from aup_tui_backends import TinyDBConnector
from aup_tui_backends.events import ExperimentFinished, JobFailed, JobQueued, JobStarted, Notice
from aup_tui_backends.monitors.nodes import NodeState, NodeStatus
from aup_tui_backends.setup import init_aup
from aup_tui_themes import DEFAULT_THEME, THEMES
from scenes import CLOCK, T0, RecordingSource, demo_state
from screens_support import Host, passive_experiment, shown_in_palette, wait_until
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Input

from aup_tui.app import AupApp
from aup_tui.monitoring import NodesProbed
from aup_tui.screens.confirm import ConfirmScreen
from aup_tui.screens.dashboard import DashboardScreen
from aup_tui.screens.job_detail import JobDetailScreen
from aup_tui.screens.passive_form import PassiveForm, PassiveRequest
from aup_tui.screens.problems import ProblemsScreen
from aup_tui.state import ExperimentState, PassiveWant
from aup_tui.widgets.header import ExperimentHeader

SMALL = (80, 24)
WIDE = (120, 30)

# -- the state keeps them ----------------------------------------------------------------------


def started(st: ExperimentState, jid: int, attempt: int = 1) -> None:
    st.apply(
        [
            JobQueued(eid=1, jid=jid, config={"x": jid}),
            JobStarted(eid=1, jid=jid, rid=1, resource="cpu:a", attempt=attempt),
        ]
    )


def test_failed_jobs_and_warnings_are_kept_newest_first():
    st = ExperimentState(eid=1)
    started(st, 1)
    started(st, 2)
    ch = st.apply([JobFailed(eid=1, jid=1, error="boom", will_retry=True, time=T0 + 1)])
    assert st.problems == [] and not ch.notices  # it will be retried: not (yet) a failed job
    ch = st.apply([JobFailed(eid=1, jid=1, error="exited with status 2", time=T0 + 2)])
    assert ch.header
    st.apply([Notice(message="fewer resources than n_parallel", level="info", time=T0 + 3)])
    ch = st.apply([Notice(message="node gpu1 unreachable", level="warning", time=T0 + 4)])
    assert ch.header  # the header's count
    st.apply([JobFailed(eid=1, jid=2, error="out of memory", status="INTERRUPTED", time=T0 + 5)])
    st.apply(
        [
            ExperimentFinished(
                eid=1, status="FAILED", best_jid=None, best_score=None, reason="no job finished", time=T0 + 6
            )
        ]
    )
    assert [(p.level, p.message, p.jid) for p in st.recent_problems()] == [
        ("error", "experiment 1 failed: no job finished", None),
        ("error", "job 2 interrupted: out of memory", 2),
        ("warning", "node gpu1 unreachable", None),
        ("error", "job 1 failed: exited with status 2", 1),
    ]


def test_a_failed_job_read_from_the_store_is_kept_once_per_attempt():
    st = ExperimentState(eid=1)
    exp = {"eid": 1, "status": "RUNNING", "n_samples": 3}
    doc = {"jid": 4, "status": "FAILED", "error": "bad", "config": {"x": 1}, "attempts": [{}], "end": T0}
    st.merge_store(exp, [doc])
    st.merge_store(exp, [doc])
    assert [(p.jid, p.message, p.time) for p in st.problems] == [(4, "job 4 failed: bad", T0)]
    again = dict(doc, attempts=[{}, {}], error="bad again", end=T0 + 9)  # a re-run failed too
    st.merge_store(exp, [again])
    assert [p.message for p in st.recent_problems()] == ["job 4 failed: bad again", "job 4 failed: bad"]


def test_a_node_going_down_is_kept_once_each_time():
    st = ExperimentState(eid=1)
    assert st.node_down("gpu-box", "ssh: connect timed out", T0)
    assert not st.node_down("gpu-box", "ssh: connect timed out", T0)  # the next probe, still down
    assert st.node_down("gpu-box", "", T0 + 60)  # down again after coming back
    assert [p.message for p in st.recent_problems()] == [
        "node gpu-box down: no answer",
        "node gpu-box down: ssh: connect timed out",
    ]


# -- the header counts them, `!` lists them ----------------------------------------------------


def troubled_state() -> ExperimentState:
    """The demo experiment after two of its jobs failed and a node warned."""
    st = demo_state()
    st.apply(
        [
            JobFailed(eid=3, jid=11, error="rosenbrock.py exited with code 1", time=T0 + 300),
            Notice(
                message="node gpu-box unreachable: ssh timed out after 10 s", level="warning", time=T0 + 420
            ),
            JobFailed(eid=3, jid=22, error="rosenbrock.py exited with code 1", time=T0 + 600),
        ]
    )
    return st


def troubled_app(**kw) -> AupApp:
    return AupApp(state=troubled_state(), clock=CLOCK, find=False, demo_source=RecordingSource(), **kw)


async def test_the_header_counts_problems_only_once_there_are_some():
    app = AupApp(state=demo_state(), clock=CLOCK, find=False, demo_source=RecordingSource())
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        assert "⚠" not in str(app.screen.query_one(ExperimentHeader).render())
        assert app.screen.check_action("problems", ()) is False
        assert not [c for c in await shown_in_palette(pilot, "problems") if c.startswith("Problems")]
        await pilot.press("exclamation_mark")
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen)
        dashboard = app.screen
        dashboard.apply_changes(
            dashboard.state.apply([JobFailed(eid=3, jid=23, error="killed", time=T0 + 700)])
        )
        await pilot.pause()
        assert "⚠ 1 · !" in str(dashboard.query_one(ExperimentHeader).render())
        assert "Problems (1)" in await shown_in_palette(pilot, "problems")


async def test_bang_lists_problems_newest_first_and_escape_goes_back(utc):
    app = troubled_app()
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        assert "⚠ 3 · !" in str(app.screen.query_one(ExperimentHeader).render())
        await pilot.press("exclamation_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, ProblemsScreen))
        table = app.screen.query_one(DataTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert [row[2] for row in rows] == ["22", "", "11"]
        assert rows[1][3].startswith("node gpu-box unreachable") and rows[0][0] == "09:10:00"
        await pilot.press("down")  # the node's warning: no job to open
        await pilot.pause()
        assert app.screen.check_action("open_job", ()) is False
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen)


async def test_the_list_grows_while_it_is_open():
    app = troubled_app()
    async with app.run_test(size=WIDE) as pilot:
        dashboard = app.screen
        await pilot.press("exclamation_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, ProblemsScreen))
        dashboard.apply_changes(
            dashboard.state.apply([Notice(message="disk nearly full", level="error", time=T0 + 750)])
        )
        table = app.screen.query_one(DataTable)
        await wait_until(pilot, lambda: table.row_count == 4, timeout=3)
        assert str(table.get_row_at(0)[3]) == "disk nearly full"


async def test_a_node_found_down_is_counted_and_listed():
    app = AupApp(state=demo_state(), clock=CLOCK, find=False, demo_source=RecordingSource())
    async with app.run_test(size=WIDE) as pilot:
        dashboard = app.screen
        down = NodeStatus(
            "node 1",
            "me@gpu-box:22",
            NodeState.DOWN,
            since=T0 + 100,
            error="ssh: connect timed out",
            display_name="gpu-box",
        )
        for _ in range(2):  # probed twice, down both times: one problem
            dashboard.post_message(NodesProbed({"node 1": down}))
            await pilot.pause()
        assert "⚠ 1 · !" in str(dashboard.query_one(ExperimentHeader).render())
        await pilot.press("exclamation_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, ProblemsScreen))
        assert (
            str(app.screen.query_one(DataTable).get_row_at(0)[3])
            == "node gpu-box down: ssh: connect timed out"
        )


async def test_enter_on_a_failed_job_opens_its_detail(tmp_path):
    init_aup(str(tmp_path / ".aup"), cpu=1)
    conn = TinyDBConnector(str(tmp_path / ".aup"))
    eid = conn.start_experiment(
        "me", "sweep", {}, workingdir=str(tmp_path), target="min", resource="cpu", n_samples=2
    )
    conn.start_job(eid, 1, {"lr": 0.1}, 1, "cpu:cpu0", 1)
    conn.end_job(eid, 1, None, "FAILED", error="train.py exited with status 2")
    conn.start_job(eid, 2, {"lr": 0.2}, 1, "cpu:cpu0", 1)
    app = AupApp(str(tmp_path / ".aup"), connector=conn, watch=eid)
    async with app.run_test(size=WIDE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen) and app.screen.state.problems)
        await pilot.press("exclamation_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, ProblemsScreen))
        assert "Open job 1" in await shown_in_palette(pilot, "open")
        await pilot.press("enter")
        await wait_until(
            pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.job is not None
        )
        assert app.screen.jid == 1 and "train.py exited with status 2" in str(
            app.screen.query_one("#detail-error").render()
        )
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ProblemsScreen)


# -- marking a passive job failed asks first ---------------------------------------------------


@pytest.fixture
def passive_run(tmp_path):
    experiment = passive_experiment(tmp_path)
    yield experiment
    experiment.close()


async def test_marking_the_passive_job_failed_asks_and_go_back_keeps_it_waiting(passive_run):
    request = PassiveRequest.from_event(passive_run.next_request())
    app = Host(
        lambda: PassiveForm(
            request, submit=passive_run.rm.submit_result, mark_failed=passive_run.rm.mark_failed
        )
    )
    async with app.run_test(size=SMALL) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, PassiveForm))
        form = app.screen
        await pilot.press("ctrl+f", *"no GPU", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        question = str(app.screen.question)
        assert f"Mark job {request.jid} failed (no GPU)?" in question and "ends the experiment" in question
        await pilot.press("n")  # go back: the reason as typed, the job still waiting
        await pilot.pause()
        assert app.screen is form and form.focused is form.query_one("#passive-reason", Input)
        assert form.query_one("#passive-reason", Input).value == "no GPU"
        assert passive_run.job(request.jid)["status"] == "WAITING" and not app.dismissed
        await pilot.press("enter", "y")
        await wait_until(pilot, lambda: app.dismissed == ["failed"])
    assert passive_run.wait_job(request.jid, ("FAILED",))["error"] == "no GPU"


# -- snapshots ---------------------------------------------------------------------------------


def test_snapshot_problems_screen(snap_compare, utc):
    assert snap_compare(troubled_app(), press=["exclamation_mark"], terminal_size=SMALL)


class HeaderApp(App):
    """The header alone (the job table under it is another test's), over `state`."""

    def __init__(self, state: ExperimentState) -> None:
        super().__init__()
        self.state = state
        for theme in THEMES:
            self.register_theme(theme)
        self.theme = DEFAULT_THEME

    def compose(self) -> ComposeResult:
        yield ExperimentHeader(self.state, CLOCK)


def test_snapshot_header_counts_problems(snap_compare, utc):
    state = troubled_state()
    state.waiting[24] = PassiveWant(3, 24, "./rosenbrock.py jobs/24.json", "/tmp", "/tmp/jobs/24.json")
    assert snap_compare(HeaderApp(state), terminal_size=(100, 3))  # with the passive badge beside it
