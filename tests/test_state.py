"""One experiment state for every view: the dashboard and the headless progress line fold the same
events into the same model, and show a job's status as its event carries it."""

from __future__ import annotations

import io

from aup_tui_backends.events import (
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
from aup_tui_backends.status import JobStatus

from aup_tui.app import AupApp
from aup_tui.headless import Progress
from aup_tui.state import ExperimentState
from aup_tui.widgets.header import ExperimentHeader
from aup_tui.widgets.job_table import JobTable

T0 = 1767258000.0


def a_run() -> list:
    """Seven jobs: finished, retried then finished, failed, stopped by the policy (its reason
    does not say so), stopped by a person (whose words do), answered by a person, still running."""
    events: list = [ExperimentStarted(eid=1, name="mix", n_samples=10, target="min", resource="cpu", time=T0)]
    for jid in range(1, 8):
        events += [
            JobQueued(eid=1, jid=jid, config={"x": jid}, time=T0),
            JobStarted(eid=1, jid=jid, rid=jid, resource=f"cpu:{jid}", attempt=1, time=T0 + jid),
        ]
    events += [
        JobIntermediate(eid=1, jid=1, index=0, values=(0.9,), time=T0 + 10),
        JobFinished(eid=1, jid=1, score=0.5, values=(0.5,), end=T0 + 11, time=T0 + 11),
        JobFailed(eid=1, jid=2, error="exited with status 1", will_retry=True, time=T0 + 12),
        JobStarted(eid=1, jid=2, rid=2, resource="cpu:2", attempt=2, time=T0 + 13),
        JobFinished(eid=1, jid=2, score=0.5, values=(0.5,), end=T0 + 14, time=T0 + 14),
        JobFailed(eid=1, jid=3, error="exited with status 2", time=T0 + 15),
        JobStopped(
            eid=1, jid=4, reason="median rule: 0.8 > 0.5", status=JobStatus.EARLY_STOPPED, time=T0 + 16
        ),
        JobStopped(eid=1, jid=5, reason="early stopped it myself", status=JobStatus.STOPPED, time=T0 + 17),
        PassiveResultWanted(
            eid=1,
            jid=6,
            command="cd /w && ./t.sh jobs/6.json",
            workingdir="/w",
            config_path="/w/jobs/6.json",
            time=T0 + 18,
        ),
        PassiveResultAccepted(eid=1, jid=6, time=T0 + 19),
        JobFinished(eid=1, jid=6, score=0.25, values=(0.25,), end=T0 + 20, time=T0 + 20),
    ]
    return events


def test_a_jobs_status_is_the_one_its_event_carries():
    st = ExperimentState()
    st.apply(a_run())
    status = {jid: row.status for jid, row in st.jobs.items()}
    assert status == {
        1: JobStatus.FINISHED,
        2: JobStatus.FINISHED,
        3: JobStatus.FAILED,
        4: JobStatus.EARLY_STOPPED,  # its reason names a rule, not "early stopped"
        5: JobStatus.STOPPED,  # its reason starts with "early stopped", a person's words
        6: JobStatus.FINISHED,
        7: JobStatus.RUNNING,
    }
    assert (st.done, st.failed, st.stopped, st.running, st.total) == (3, 1, 2, 1, 10)
    assert (st.best_jid, st.best_score) == (6, 0.25)
    assert st.jobs[4].error == "median rule: 0.8 > 0.5" and not st.waiting


def test_the_headless_line_and_the_dashboard_agree_on_the_same_events():
    events = a_run()
    progress = Progress(0, maximize=False, out=io.StringIO())
    for event in events:
        progress.apply(event)
    tui = ExperimentState()
    tui.apply(events)
    assert "6/10  running 1 failed 1 stopped 2  best 0.25 (job 6)" in progress.line()
    folded = progress.state
    assert (folded.done, folded.failed, folded.stopped, folded.running, folded.total) == (
        tui.done,
        tui.failed,
        tui.stopped,
        tui.running,
        tui.total,
    )
    assert progress.best == (tui.best_score, tui.best_jid)
    assert {jid: row.status for jid, row in folded.jobs.items()} == {
        jid: row.status for jid, row in tui.jobs.items()
    }


def test_catching_up_from_the_store_folds_the_records_statuses():
    """The TUI hands a running experiment to the terminal: the line counts what the store says."""
    progress = Progress(0, maximize=True, out=io.StringIO())
    progress.catch_up(
        {"eid": 1, "name": "mix", "status": "RUNNING", "n_samples": 5, "target": "max"},
        [
            {"jid": 1, "status": "FINISHED", "score": 0.7, "end": T0 + 1, "config": {"x": 1}},
            {"jid": 2, "status": "EARLY_STOPPED", "score": 0.1, "end": T0 + 2, "config": {"x": 2}},
            {"jid": 3, "status": "INTERRUPTED", "score": None, "end": T0 + 3, "config": {"x": 3}},
            {"jid": 4, "status": "WAITING", "score": None, "end": None, "config": {"x": 4}},
        ],
    )
    line = progress.line()
    assert "3/5  running 1 failed 1 stopped 1  best 0.7 (job 1)" in line, line


async def test_the_dashboard_shows_a_policy_stop_as_an_early_stop_whatever_its_reason():
    st = ExperimentState(eid=1, name="mix", status="RUNNING", n_samples=10, target="min")
    app = AupApp(state=st, clock=lambda: T0 + 30, find=False)
    async with app.run_test(size=(110, 30)) as pilot:
        app.screen.apply_changes(st.apply(a_run()))
        await pilot.pause()
        table = app.screen.query_one(JobTable)
        assert "early stop" in str(table.get_row("4")[1])
        assert "stopped" in str(table.get_row("5")[1]) and "early" not in str(table.get_row("5")[1])
        header = app.screen.query_one(ExperimentHeader).render().plain
        assert "6/10" in header and "■2" in header and "best (min) 0.25 job 6" in header
