"""The header's progress bar tells finished, running and failed jobs apart (issue 12, defect 12)."""

from __future__ import annotations

from scenes import CLOCK, T0

from aup_tui.app import AupApp
from aup_tui.state import ExperimentState, JobRow
from aup_tui.widgets.header import EMPTY_CELL, ENDED_CELL, RUNNING_CELL, ExperimentHeader


def state_with(statuses: list[str], n_samples: int) -> ExperimentState:
    st = ExperimentState(eid=1, name="bar", status="RUNNING", n_samples=n_samples, target="min")
    st.start = T0
    for jid, status in enumerate(statuses, 1):
        row = JobRow(jid=jid, config={"x": jid}, resource="cpu:cpu0", start=T0, attempts=1)
        st.jobs[jid] = row
        st.counts["QUEUED"] += 1
        st._set_status(row, status)
    return st


async def bar_of(st: ExperimentState) -> tuple[str, str]:
    """The header's progress bar (the cells before the counts) and the counts, as shown at 80x24."""
    app = AupApp(state=st, clock=CLOCK, find=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        line2 = app.screen.query_one(ExperimentHeader).render().plain.splitlines()[1]
    cells = line2.split(" ")[0]
    return cells, line2[len(cells) :]


async def test_running_jobs_do_not_fill_the_bar_as_finished_ones():
    cells, counts = await bar_of(state_with(["RUNNING", "RUNNING"], n_samples=4))
    assert ENDED_CELL not in cells  # nothing finished: no solid cell
    assert cells.count(RUNNING_CELL) == len(cells) // 2  # two of four are running
    assert cells.count(EMPTY_CELL) == len(cells) - len(cells) // 2
    assert counts.startswith(" 0/4") and "▶2" in counts and "✓0" in counts


async def test_finished_failed_and_running_each_take_their_share():
    cells, counts = await bar_of(state_with(["FINISHED", "FAILED", "RUNNING", "QUEUED"], n_samples=4))
    quarter = len(cells) // 4
    assert abs(cells.count(ENDED_CELL) - 2 * quarter) <= 1  # finished + failed: solid
    assert abs(cells.count(RUNNING_CELL) - quarter) <= 1
    assert cells.index(RUNNING_CELL) > cells.rindex(ENDED_CELL)  # ended first, then running, then the rest
    assert counts.startswith(" 2/4") and "✓1" in counts and "✗1" in counts


async def test_the_bar_is_solid_only_when_every_job_ended():
    cells, counts = await bar_of(state_with(["FINISHED"] * 3 + ["STOPPED"], n_samples=4))
    assert set(cells) == {ENDED_CELL}
    assert counts.startswith(" 4/4") and "■1" in counts
