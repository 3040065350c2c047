"""The job log view on long logs: it shows the tail, follows a running job, searches, stays bounded."""

from __future__ import annotations

import os
import time

from screens_support import Host, RunningExperiment, seed_finished_job, wait_until, write_script
from textual.app import App, ComposeResult

from aup_tui.screens.job_detail import JobDetailScreen
from aup_tui.widgets.log_view import MAX_LINE_CHARS, FileTail, LogView

LINES = 60_000


def numbered(n: int, start: int = 0, word: str = "line") -> str:
    return "".join(f"{word} {i:06d}\n" for i in range(start, start + n))


def visible(log: LogView) -> list[str]:
    """The rows the log view draws now, as text."""
    return [log.render_line(y).text.rstrip() for y in range(log.scrollable_content_region.height)]


def seeded_with_log(tmp_path, text: str):
    conn, eid, jid = seed_finished_job(tmp_path)
    (tmp_path / "jobs" / f"{jid}.2.out").write_text(text)
    return conn, eid, jid


async def test_a_60000_line_log_shows_its_tail(tmp_path) -> None:
    conn, eid, jid = seeded_with_log(tmp_path, numbered(LINES))
    try:
        app = Host(lambda: JobDetailScreen(conn, eid, jid, poll_interval=0.05))
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.ended)
            await pilot.pause()
            log = app.screen.query_one("#detail-log", LogView)
            shown = visible(log)
            assert shown[-1] == f"line {LINES - 1:06d}" and shown[0].startswith("line 0599")
            assert log.border_subtitle == "showing the last 10,000 of 60,000 lines · ended"
            await pilot.press("g")  # the first line held, and back
            assert visible(log)[0] == f"line {LINES - 10_000:06d}"
            await pilot.press("pagedown")
            assert visible(log)[0] > f"line {LINES - 10_000:06d}"
            await pilot.press("G")
            assert visible(log)[-1] == f"line {LINES - 1:06d}"
    finally:
        conn.close()


async def test_a_job_flooding_its_log_is_followed_and_later_lines_appear(tmp_path) -> None:
    write_script(
        tmp_path / "train.py",
        f"""
import sys, time
sys.stdout.write("".join(f"line {{i:06d}}\\n" for i in range({LINES})))
sys.stdout.flush()
for i in range(3):
    time.sleep(0.6)
    print(f"later {{i}}", flush=True)
print("#Auptimizer:1.0", flush=True)
""",
    )
    run = RunningExperiment(
        tmp_path,
        {
            "name": "flood",
            "script": "./train.py",
            "resource": "cpu",
            "n_samples": 1,
            "target": "min",
            "proposer": "random",
            "random_seed": 1,
            "parameter_config": [{"name": "x", "range": [-2, 2], "type": "float"}],
        },
        cpu=1,
    )
    try:
        for _ in range(500):
            if run.connector.jobs(run.eid):
                break
            time.sleep(0.01)
        jid = run.connector.jobs(run.eid)[0]["jid"]
        app = Host(lambda: JobDetailScreen(run.connector, run.eid, jid, poll_interval=0.05))
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, JobDetailScreen))
            log = app.screen.query_one("#detail-log", LogView)
            await wait_until(pilot, lambda: f"line {LINES - 1:06d}" in visible(log), timeout=15)
            assert log.line_count <= log.max_lines
            await wait_until(pilot, lambda: "later 0" in visible(log), timeout=15)
            assert log.border_subtitle.endswith("· following")
            await pilot.press("pageup")  # scrolling up stops following: the view stays put
            top = visible(log)[0]
            assert log.border_subtitle.endswith("· paused (f follows)")
            await wait_until(pilot, lambda: "later 1" in log.lines, timeout=15)
            await pilot.pause()
            assert visible(log)[0] == top and "later 1" not in visible(log)
            await pilot.press("end")  # and the end follows again
            assert log.border_subtitle.endswith("· following") and "later 1" in visible(log)
            await wait_until(pilot, lambda: app.screen.ended, timeout=15)
            await pilot.pause()
            assert visible(log)[-1] == "#Auptimizer:1.0" and "later 2" in visible(log)
            assert log.total_lines == LINES + 4 and log.line_count == log.max_lines
    finally:
        run.close()


async def test_search_finds_highlights_and_n_and_N_move(tmp_path) -> None:
    conn, eid, jid = seeded_with_log(tmp_path, numbered(LINES))
    try:
        app = Host(lambda: JobDetailScreen(conn, eid, jid, poll_interval=0.05))
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.ended)
            screen = app.screen
            log = screen.query_one("#detail-log", LogView)
            status = screen.query_one("#detail-search-status")
            await pilot.press("slash", *"line 05000", "enter")  # lines 50,000 to 50,009
            assert log.has_focus and screen.query_one("#detail-search").has_class("-visible")
            assert log.lines[log.current_match] == "line 050000"
            assert "line 050000" in visible(log)
            assert str(status.render()) == "match 1 of 10 · line 50,001"
            assert "paused" not in log.border_subtitle  # an ended log stays "ended"
            await pilot.press("n", "n")
            assert log.lines[log.current_match] == "line 050002"
            assert str(status.render()) == "match 3 of 10 · line 50,003"
            await pilot.press("N", "N", "N")  # wraps around to the last match
            assert log.lines[log.current_match] == "line 050009"
            row = visible(log).index("line 050009")
            strip = log.render_line(row)
            highlighted = [seg.text for seg in strip if seg.style and seg.style.bold]
            assert "".join(highlighted) == "line 05000"  # only the match stands out
            await pilot.press("slash", *"nothing like it", "enter")
            assert log.current_match is None and str(status.render()) == "no match for 'nothing like it'"
            assert status.has_class("-problem")
            await pilot.press("slash", "escape")  # esc closes the search, a second one leaves
            assert not screen.query_one("#detail-search").has_class("-visible")
            assert isinstance(app.screen, JobDetailScreen)
            await pilot.press("escape")
            assert app.dismissed == [None]
    finally:
        conn.close()


async def test_smart_case_search_and_a_match_off_to_the_right_scrolls_into_view() -> None:
    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield LogView()

    app = One()
    async with app.run_test(size=(40, 10)) as pilot:
        log = app.query_one(LogView)
        log.append("x" * 100 + " Needle\nneedle\n")
        log.set_query("Needle")  # a capital: case matters
        assert log.matches() == [0]
        assert log.find() == 0 and log.scroll_x > 0 and "Needle" in visible(log)[0]
        log.set_query("needle")
        assert log.matches() == [0, 1]
        await pilot.pause()


async def test_memory_is_bounded_by_lines_held_not_by_the_log() -> None:
    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield LogView(max_lines=1000)

    app = One()
    async with app.run_test(size=(40, 10)):
        log = app.query_one(LogView)
        for start in range(0, 1_000_000, 50_000):
            log.append(numbered(50_000, start))
        assert log.line_count == 1000 and len(log.lines) <= 1001 and log.total_lines == 1_000_000
        assert visible(log)[-1] == "line 999999"
        log.append("y" * (50 * MAX_LINE_CHARS))  # a job writing with no newline
        log.append("y" * (50 * MAX_LINE_CHARS))
        assert len(log.lines[-1]) == MAX_LINE_CHARS and log.lines[-1].endswith("…")


async def test_text_can_be_selected_with_the_mouse() -> None:
    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield LogView()

    app = One()
    async with app.run_test(size=(40, 10)) as pilot:
        log = app.query_one(LogView)
        log.append("alpha\nbeta\ngamma\n")
        await pilot.pause()
        await pilot.mouse_down(log, offset=(0, 0))
        await pilot.hover(log, offset=(3, 1))
        await pilot.mouse_up(log, offset=(3, 1))
        await pilot.pause()
        assert app.screen.get_selected_text() == "alpha\nbeta"


def test_file_tail_counts_the_lines_it_skips(tmp_path) -> None:
    path = tmp_path / "big.out"
    path.write_text(numbered(200_000))
    tail = FileTail(str(path), initial_bytes=64 * 1024)
    text = tail.read()
    held = text.count("\n")  # the marker line stands in for the line cut at the skip point
    assert tail.skipped_lines + held == 200_000 and text.endswith("line 199999\n")
    assert text.splitlines()[0].startswith(f"… {tail.skipped_lines:,} lines (")


def test_file_tail_rereads_a_replaced_file(tmp_path) -> None:
    path = tmp_path / "job.out"
    path.write_text(numbered(10))
    tail = FileTail(str(path))
    assert tail.read() == numbered(10)
    replacement = tmp_path / "new.out"
    replacement.write_text("rotated\n")
    os.replace(replacement, path)  # a log rotated under the reader
    text = tail.read()
    assert "truncated or replaced" in text and text.endswith("rotated\n")


def test_log_search_highlight(snap_compare, tmp_path, utc) -> None:
    conn, eid, jid = seed_finished_job(tmp_path)
    app = Host(lambda: JobDetailScreen(conn, eid, jid, poll_interval=0.05, clock=lambda: 1_767_225_700.0))

    async def searched(pilot) -> None:
        await wait_until(
            pilot, lambda: isinstance(pilot.app.screen, JobDetailScreen) and pilot.app.screen.ended
        )
        await pilot.press("slash", *"loss", "enter", "n")
        await pilot.pause()

    try:
        assert snap_compare(app, run_before=searched, terminal_size=(80, 24))
    finally:
        conn.close()
