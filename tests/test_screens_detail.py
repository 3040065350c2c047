"""The job detail: live log of a real running job, attempts, results curve; and its parts."""

from __future__ import annotations

import time

import pytest
from screens_support import (
    LOG_ATTEMPT_2,
    Host,
    RunningExperiment,
    seed_finished_job,
    shown_in_palette,
    wait_until,
    write_script,
)

from aup_tui.screens.job_detail import JobDetailScreen
from aup_tui.widgets.attempts_table import format_duration
from aup_tui.widgets.log_view import FileTail, LogView
from aup_tui.widgets.result_curve import ResultCurve, braille_rows

STEPS = 6
SCRIPT = f"""
import sys, time
print("starting", flush=True)
for i in range(1, {STEPS + 1}):
    time.sleep(0.35)
    print(f"step {{i}}", flush=True)
    print(f"#Auptimizer:{{10.0 / i}}", flush=True)
print("done", flush=True)
"""


def log_lines(screen: JobDetailScreen) -> list[str]:
    lines = list(screen.query_one("#detail-log", LogView).lines)
    return lines[:-1] if lines and lines[-1] == "" else lines  # Log keeps an empty line after a newline


def cpu_experiment(tmp_path, script: str, **extra) -> RunningExperiment:
    write_script(tmp_path / "train.py", script)
    return RunningExperiment(
        tmp_path,
        {
            "name": "live",
            "script": "./train.py",
            "resource": "cpu",
            "n_samples": 1,
            "target": "min",
            "proposer": "random",
            "random_seed": 1,
            "parameter_config": [{"name": "x", "range": [-2, 2], "type": "float"}],
            **extra,
        },
        cpu=1,
    )


def first_jid(run: RunningExperiment) -> int:
    for _ in range(500):
        jobs = run.connector.jobs(run.eid)
        if jobs:
            return jobs[0]["jid"]
        time.sleep(0.01)
    raise AssertionError("no job started")


async def test_live_log_follows_a_running_job(tmp_path) -> None:
    run = cpu_experiment(tmp_path, SCRIPT)
    try:
        jid = first_jid(run)
        app = Host(lambda: JobDetailScreen(run.connector, run.eid, jid, poll_interval=0.1))
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, JobDetailScreen))
            screen = app.screen
            await wait_until(pilot, lambda: "step 1" in log_lines(screen))
            # shown while the job still runs, before its later lines exist
            assert run.job(jid)["status"] == "RUNNING"
            assert "done" not in log_lines(screen)
            assert "RUNNING" in str(screen.query_one("#detail-title").render())
            assert screen.query_one("#detail-log").border_subtitle == "following"
            seen_counts = {len(screen.query_one("#detail-curve", ResultCurve).results)}
            await wait_until(
                pilot,
                lambda: seen_counts.add(len(screen.query_one("#detail-curve").results)) or screen.ended,
                timeout=15,
            )
            lines = log_lines(screen)
            assert lines[:3] == ["starting", "step 1", f"#Auptimizer:{10.0}"]
            assert "done" in lines and f"step {STEPS}" in lines
            assert len([s for s in seen_counts if 0 < s < STEPS]) >= 1  # the curve grew while it ran
            curve = screen.query_one("#detail-curve", ResultCurve)
            assert [r[0] for r in curve.results] == pytest.approx([10.0 / i for i in range(1, STEPS + 1)])
            assert any(ch in str(curve.render()) for ch in "⠁⠂⠄⡀⠈⠐⠠⢀")  # braille dots drawn
            assert "FINISHED" in str(screen.query_one("#detail-title").render())
            assert screen.query_one("#detail-log").border_subtitle == "ended"
            table = screen.query_one("#detail-attempts")
            assert table.row_count == 1 and "cpu" in str(table.get_row_at(0)[1])
            await pilot.press("escape")
            await pilot.pause()
            assert app.dismissed == [None] and not isinstance(app.screen, JobDetailScreen)
    finally:
        run.close()


async def test_retry_shows_both_attempts_and_the_error(tmp_path) -> None:
    script = """
import os, sys
marker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tried")
if not os.path.exists(marker):
    open(marker, "w").close()
    print("first try breaks", flush=True)
    sys.exit(3)
print("second try works", flush=True)
print("#Auptimizer:0.5", flush=True)
"""
    run = cpu_experiment(tmp_path, script, job_failure={"ignore_fail": True, "job_retries": 1})
    try:
        jid = first_jid(run)
        run.wait_job(jid, ("FINISHED", "FAILED"))
        app = Host(lambda: JobDetailScreen(run.connector, run.eid, jid, poll_interval=0.05))
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.ended)
            screen = app.screen
            table = screen.query_one("#detail-attempts")
            assert table.row_count == 2
            assert "FAILED" in str(table.get_row_at(0)[4]) and "exited with status 3" in str(
                table.get_row_at(0)[5]
            )
            assert "FINISHED" in str(table.get_row_at(1)[4])
            # the current attempt's log is shown; the failed one's is not mixed in
            assert "second try works" in log_lines(screen)
            assert "first try breaks" not in log_lines(screen)
            assert screen.query_one("#detail-log").border_title == f"Log jobs/{jid}.2.out"
    finally:
        run.close()


async def test_failed_job_shows_its_error(tmp_path) -> None:
    run = cpu_experiment(tmp_path, 'print("oops", flush=True)\nraise SystemExit(2)\n')
    try:
        jid = first_jid(run)
        run.wait_job(jid, ("FAILED",))
        app = Host(lambda: JobDetailScreen(run.connector, run.eid, jid, poll_interval=0.05))
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.ended)
            error = app.screen.query_one("#detail-error")
            assert error.has_class("-visible") and "exited with status 2" in str(error.render())
            assert str(error.render()).startswith("✗") and not error.has_class("-stopped")
            assert error.region.height > 0
            assert "oops" in log_lines(app.screen)
            assert "no intermediate results" in str(app.screen.query_one("#detail-curve").render())
    finally:
        run.close()


async def test_an_early_stopped_job_says_why_as_a_decision_not_a_failure(tmp_path) -> None:
    from aup_tui_backends.setup import init_aup
    from aup_tui_backends.store import TinyDBConnector

    init_aup(str(tmp_path / ".aup"), cpu=1)
    conn = TinyDBConnector(str(tmp_path / ".aup"))
    eid = conn.start_experiment("me", "exp", {}, workingdir=str(tmp_path), target="min", resource="cpu")
    jid = conn.new_jid()
    conn.start_job(eid, jid, {"x": 1}, 1, "cpu:cpu0", 1)
    why = (
        "early stopped after 2 results — median rule: its mean 14 over 2 results is higher than the median 3"
    )
    conn.end_job(eid, jid, 14.0, "EARLY_STOPPED", error=why)
    try:
        app = Host(lambda: JobDetailScreen(conn, eid, jid, poll_interval=0.05))
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.ended)
            await pilot.pause()
            error = app.screen.query_one("#detail-error")
            assert error.has_class("-visible", "-stopped")
            assert str(error.render()) == f"■ {why}"
    finally:
        conn.close()


async def test_seeded_job_shows_parameters_labels_and_durations(tmp_path) -> None:
    conn, eid, jid = seed_finished_job(tmp_path)
    try:
        app = Host(lambda: JobDetailScreen(conn, eid, jid, poll_interval=0.05))
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.ended)
            screen = app.screen
            params = str(screen.query_one("#detail-params-text").render())
            assert "optimizer" in params and "adam" in params and "0.001" in params
            legend = str(screen.query_one("#detail-curve").render()).splitlines()[0]
            assert legend.startswith("loss 0.11") and "accuracy 0.85" in legend
            table = screen.query_one("#detail-attempts")
            assert [str(table.get_row_at(i)[3]) for i in range(2)] == ["4.2s", "1m30s"]
            assert log_lines(screen)[-1] == "rosenbrock(0.9000, 0.8100) = 0.110000"
            assert len(log_lines(screen)) == LOG_ATTEMPT_2.count("\n")
    finally:
        conn.close()


# -- the parts --------------------------------------------------------------------------------


def test_file_tail_reads_only_what_was_added(tmp_path) -> None:
    path = tmp_path / "job.out"
    tail = FileTail(str(path))
    assert tail.read() is None  # not there yet
    path.write_bytes(b"one\ntw")
    assert tail.read() == "one\ntw"  # a partial line is handed over as it is
    assert tail.read() == ""
    with open(path, "ab") as f:
        f.write(b"o\nd\xc3")  # half of "é"
    assert tail.read() == "o\nd"
    with open(path, "ab") as f:
        f.write(b"\xa9j\xc3\xa0\n")
    assert tail.read() == "éjà\n"


def test_file_tail_opens_huge_logs_at_their_end(tmp_path) -> None:
    path = tmp_path / "big.out"
    path.write_text("".join(f"line {i:06d}\n" for i in range(100_000)))  # 1.2 MB
    tail = FileTail(str(path), initial_bytes=4096, max_read=8192)
    text = tail.read()
    assert text.startswith("… ") and "earlier output not shown" in text.splitlines()[0]
    shown = text.splitlines()[1:]
    assert shown[0].startswith("line ") and len(shown[0]) == len("line 000000")  # starts at a line boundary
    assert shown[-1] == "line 099999" and len(text) < 4200
    with open(path, "a") as f:  # a flood between two reads is skipped, not lagged behind
        f.write("".join(f"more {i:06d}\n" for i in range(10_000)))
    text = tail.read()
    assert "earlier output not shown" in text and text.endswith("more 009999\n") and len(text) < 8300


def test_file_tail_rereads_a_truncated_file(tmp_path) -> None:
    path = tmp_path / "job.out"
    path.write_text("old output\n" * 10)
    tail = FileTail(str(path))
    tail.read()
    path.write_text("new\n")
    assert tail.read().endswith("new\n")


def test_braille_curve_spans_the_canvas() -> None:
    rows = braille_rows([5, 4, 3, 2, 1], width=10, height=3, lo=1, hi=5)
    assert len(rows) == 3 and all(len(r) == 10 for r in rows)
    assert rows[0][0] != " " and rows[-1][-1] != " "  # first point top-left, last bottom-right


def test_format_duration() -> None:
    assert [format_duration(s) for s in (None, 3.21, 65, 7322)] == ["", "3.2s", "1m05s", "2h02m"]


async def test_the_palette_offers_the_job_details_own_commands(tmp_path) -> None:
    conn, eid, jid = seed_finished_job(tmp_path)
    try:
        app = Host(lambda: JobDetailScreen(conn, eid, jid, poll_interval=0.05))
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.ended)
            shown = await shown_in_palette(pilot, "log")
            assert {"Log: top", "Log: bottom"} <= set(shown)
            assert any(name in ("Log: follow", "Log: stop following") for name in shown), shown
            await pilot.press("ctrl+p", *"back")
            await pilot.pause(0.4)
            await pilot.press("enter")
            await wait_until(pilot, lambda: not isinstance(app.screen, JobDetailScreen))
            assert app.dismissed == [None]
    finally:
        conn.close()


def test_bindings_have_descriptions() -> None:
    assert all(b.description for b in JobDetailScreen.BINDINGS)
    assert "escape" in {b.key for b in JobDetailScreen.BINDINGS}


async def test_waiting_passive_job_says_so(tmp_path) -> None:
    from screens_support import passive_experiment

    run = passive_experiment(tmp_path)
    try:
        jid = run.next_request().jid
        app = Host(lambda: JobDetailScreen(run.connector, run.eid, jid, poll_interval=0.05))
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(
                pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.job is not None
            )
            await pilot.pause(0.2)
            assert "WAITING" in str(app.screen.query_one("#detail-title").render())
            assert log_lines(app.screen) == ["waiting for the person running this job…"]
    finally:
        run.close()
