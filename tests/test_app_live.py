"""The app with real experiments: run in-process, watched in another process, stop keys, quit,
passive jobs, the picker and the empty state. Real job processes, a real store."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from aup_tui_backends.config import load_experiment
from aup_tui_backends.setup import init_aup
from aup_tui_backends.store import TinyDBConnector
from helpers import ROOT, cli, cli_popen, pid_alive, write_experiment, write_script

from aup_tui.app import AupApp, _finish_experiment, exit_code_after
from aup_tui.screens.confirm import ConfirmScreen
from aup_tui.screens.dashboard import DashboardScreen
from aup_tui.screens.empty import EmptyScreen
from aup_tui.screens.picker import PickerScreen
from aup_tui.widgets.header import ExperimentHeader
from aup_tui.widgets.job_table import JobTable

SIZE = (100, 30)

# A job whose process tree we can check: the shell and its `sleep` child both leave pid files.
SLOW_JOB = """
    dir=$(dirname "$1")
    echo $$ > "$dir/$AUP_JOB_ID.pid"
    echo "#Auptimizer:0.5"
    sleep 60 &
    echo $! > "$dir/$AUP_JOB_ID.child"
    wait
    echo "#Auptimizer:1"
"""


def slow_setup(tmp_path: Path, n_samples: int = 6) -> tuple[str, object]:
    init_aup(str(tmp_path / ".aup"), cpu=2)
    write_script(tmp_path, "job.sh", SLOW_JOB)
    config = load_experiment(write_experiment(tmp_path, n_samples=n_samples))
    return str(tmp_path / ".aup"), config


def job_pids(tmp_path: Path, jid: int) -> list[int]:
    out = []
    for ext in ("pid", "child"):
        path = tmp_path / "jobs" / f"{jid}.{ext}"
        if path.exists() and path.read_text().strip():
            out.append(int(path.read_text()))
    return out


async def wait_for(pilot, predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


def gone(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def dashboard(app) -> DashboardScreen:
    return next(s for s in app.screen_stack if isinstance(s, DashboardScreen))


def stop_app_experiment(app) -> None:
    if app.experiment is not None:
        app.experiment.stop()
        app.exp_thread.join(15)


# -- running in this process ------------------------------------------------------------------


async def test_run_shows_jobs_live_and_s_stops_the_selected_job(tmp_path):
    auppath, config = slow_setup(tmp_path)
    conn = TinyDBConnector(auppath)
    app = AupApp(auppath, connector=conn, experiment=config)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: dashboard(app).state.running == 2)
            state = dashboard(app).state
            jid = app.screen.query_one(JobTable).selected_jid
            await wait_for(pilot, lambda: len(job_pids(tmp_path, jid)) == 2)
            pids = job_pids(tmp_path, jid)
            assert all(pid_alive(p) for p in pids)
            await pilot.press("s")
            assert f"Stop job {jid}" in str(app.screen.query_one("#confirm-question").render())
            await pilot.press("y")
            await wait_for(pilot, lambda: state.jobs[jid].status == "STOPPED")
            assert gone(pids), "the job's processes (shell and its child) must be gone"
            assert conn.get_job(jid, state.eid)["status"] == "STOPPED"
            assert "RUNNING" in app.screen.query_one(ExperimentHeader).render().plain
            # enter opens the job's detail, escape comes back
            from aup_tui.screens.job_detail import JobDetailScreen

            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, JobDetailScreen))
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
    finally:
        stop_app_experiment(app)


async def test_a_failed_experiment_says_why_on_screen(tmp_path):
    init_aup(str(tmp_path / ".aup"), cpu=1)
    write_script(tmp_path, "job.sh", "echo 'CUDA out of memory'\nexit 3")
    config = load_experiment(write_experiment(tmp_path, n_samples=3, n_parallel=1))
    conn = TinyDBConnector(str(tmp_path / ".aup"))
    app = AupApp(str(tmp_path / ".aup"), connector=conn, experiment=config)
    try:
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await wait_for(pilot, lambda: dashboard(app).state.status == "FAILED")
            await pilot.pause()
            await wait_for(pilot, lambda: len(app.screen.query("Toast")) >= 2)
            toasts = [str(t.render()) for t in app.screen.query("Toast")]
            failed = [t for t in toasts if "experiment" in t and "failed" in t]
            assert failed, toasts
            # the reason: which job, how it failed, and how to keep going next time
            assert "job.sh exited with status 3" in failed[-1] and "ignore_fail" in failed[-1]
    finally:
        stop_app_experiment(app)


async def test_S_stops_the_experiment_and_n_keeps_it(tmp_path):
    auppath, config = slow_setup(tmp_path)
    conn = TinyDBConnector(auppath)
    app = AupApp(auppath, connector=conn, experiment=config)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: dashboard(app).state.running == 2)
            state = dashboard(app).state
            jids = [j for j, row in state.jobs.items() if row.status == "RUNNING"]
            await wait_for(pilot, lambda: all(len(job_pids(tmp_path, j)) == 2 for j in jids))
            pids = [p for j in jids for p in job_pids(tmp_path, j)]
            await pilot.press("S")
            await pilot.press("n")  # "keep running": nothing happens
            await pilot.pause(0.3)
            assert state.status == "RUNNING"
            await pilot.press("S")
            await pilot.press("y")
            await wait_for(pilot, lambda: state.status == "STOPPED")
            assert gone(pids)
            assert conn.get_experiment(state.eid)["status"] == "STOPPED"
            assert {conn.get_job(j, state.eid)["status"] for j in jids} == {"STOPPED"}
            await pilot.press("q")  # nothing runs any more: quits at once
        assert app.return_value == 130
        assert _finish_experiment(app) == 130
    finally:
        stop_app_experiment(app)


async def test_q_asks_then_y_stops_the_experiment_cleanly(tmp_path, capsys):
    auppath, config = slow_setup(tmp_path)
    conn = TinyDBConnector(auppath)
    app = AupApp(auppath, connector=conn, experiment=config)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: dashboard(app).state.running == 2)
            await pilot.press("q")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("escape")  # stay
            assert isinstance(app.screen, DashboardScreen)
            await pilot.press("q", "y")
        code = _finish_experiment(app)
        assert code == 130
        assert not app.exp_thread.is_alive()
        exp = TinyDBConnector(auppath).get_experiment(app.experiment.eid)
        assert exp["status"] == "STOPPED" and exp["end"] is not None  # the store is complete
        assert "STOPPED" in capsys.readouterr().err
    finally:
        stop_app_experiment(app)


async def test_an_exception_that_ends_the_tui_exits_1_and_stops_the_jobs(tmp_path, monkeypatch, capsys):
    # A bug in the UI must not look like success to a script (exit 0) nor leave jobs running.
    auppath, config = slow_setup(tmp_path)
    conn = TinyDBConnector(auppath)
    app = AupApp(auppath, connector=conn, experiment=config)

    def broken_export(self) -> None:
        raise RuntimeError("a bug in the UI")

    monkeypatch.setattr(DashboardScreen, "action_export", broken_export)
    try:
        with pytest.raises(RuntimeError, match="a bug in the UI"):
            async with app.run_test(size=SIZE) as pilot:
                await wait_for(pilot, lambda: len(job_pids(tmp_path, 1) + job_pids(tmp_path, 2)) == 4)
                pids = job_pids(tmp_path, 1) + job_pids(tmp_path, 2)
                await pilot.press("e")
        assert exit_code_after(app, None) == 1
        assert not app.exp_thread.is_alive()
        assert pids and gone(pids), "the running jobs' processes must be killed"
        exp = TinyDBConnector(auppath).get_experiment(app.experiment.eid)
        assert exp["status"] == "STOPPED" and exp["end"] is not None
        assert "stopping the experiment" in capsys.readouterr().err
    finally:
        stop_app_experiment(app)


class _OpensGateOn:
    """A stderr that touches `gate` once `text` is written to it (and keeps everything written)."""

    def __init__(self, gate: Path, text: str) -> None:
        self.gate, self.text, self.parts = gate, text, []

    def write(self, s: str) -> int:
        self.parts.append(s)
        if self.text in s:
            self.gate.touch()
        return len(s)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def getvalue(self) -> str:
        return "".join(self.parts)


async def test_q_then_n_keeps_the_experiment_running_headless_to_the_end(tmp_path, monkeypatch):
    # The jobs wait for a gate that opens only once the headless follower says it keeps the
    # experiment running: with plain timed jobs, the experiment could end while the app was still
    # closing, and there was nothing left to keep running (the test then failed ~1 in 2 on 2 cores).
    gate = tmp_path / "go"
    init_aup(str(tmp_path / ".aup"), cpu=2)
    write_script(tmp_path, "job.sh", f'while [ ! -e {gate} ]; do sleep 0.02; done; echo "#Auptimizer:0.25"')
    config = load_experiment(write_experiment(tmp_path, n_samples=4))
    auppath = str(tmp_path / ".aup")
    app = AupApp(auppath, connector=TinyDBConnector(auppath), experiment=config)
    err = _OpensGateOn(gate, "keeps running here")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: dashboard(app).state.running >= 1)
            await pilot.press("q", "n")
        assert app.quit_choice == "keep"
        assert app.exp_thread.is_alive() and not gate.exists()  # the jobs are still held
        monkeypatch.setattr("sys.stderr", err)
        assert _finish_experiment(app) == 0
        monkeypatch.undo()
        text = err.getvalue()
        assert "keeps running here" in text and "FINISHED: 4 finished" in text
        assert TinyDBConnector(auppath).get_experiment(app.experiment.eid)["status"] == "FINISHED"
    finally:
        gate.touch()
        stop_app_experiment(app)


async def test_passive_job_opens_the_form_badge_after_escape_and_next_form_follows(tmp_path):
    from aup_tui.screens.passive_form import PassiveForm

    init_aup(str(tmp_path / ".aup"), passive=True)
    shutil.copy(ROOT / "examples" / "rosenbrock" / "rosenbrock.py", tmp_path / "rosenbrock.py")
    config = load_experiment(
        write_experiment(
            tmp_path,
            script="./rosenbrock.py",
            resource="passive",
            n_samples=2,
            n_parallel=1,
            target="min",
            parameter_config=[{"name": "x", "range": [-2, 2], "type": "float"}],
        )
    )
    auppath = str(tmp_path / ".aup")
    conn = TinyDBConnector(auppath)
    app = AupApp(auppath, connector=conn, experiment=config)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, PassiveForm))
            first = app.screen.request.jid
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
            assert f"job {first} waiting for you" in app.screen.query_one(ExperimentHeader).render().plain
            await pilot.press("p")
            await wait_for(pilot, lambda: isinstance(app.screen, PassiveForm))
            await pilot.press(*"1.5")
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: conn.get_job(first, app.experiment.eid)["status"] == "FINISHED")
            # the next passive job's form follows by itself
            await wait_for(
                pilot, lambda: isinstance(app.screen, PassiveForm) and app.screen.request.jid != first
            )
            await pilot.press(*"2.5")
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: dashboard(app).state.status == "FINISHED")
            assert dashboard(app).state.best_score == 1.5
            await pilot.press("q")
        assert _finish_experiment(app) == 0
    finally:
        stop_app_experiment(app)


# -- watching another process -------------------------------------------------------------------


async def test_watch_a_headless_run_in_another_process_and_stop_it_through_the_store(tmp_path):
    assert cli("init", "--cpu", "2", cwd=tmp_path).returncode == 0
    write_script(tmp_path, "job.sh", SLOW_JOB)
    write_experiment(tmp_path, n_samples=6)
    proc = cli_popen(
        "run",
        "--headless",
        "experiment.json",
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    auppath = str(tmp_path / ".aup")
    try:
        conn = TinyDBConnector(auppath)
        deadline = time.monotonic() + 20
        while conn.latest_experiment() is None or len(conn.jobs(conn.latest_experiment()["eid"])) < 2:
            assert time.monotonic() < deadline, "the headless run did not start"
            time.sleep(0.1)
        eid = conn.latest_experiment()["eid"]
        app = AupApp(auppath, connector=conn, watch=eid)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: dashboard(app).state.running == 2)
            state = dashboard(app).state
            table = app.screen.query_one(JobTable)
            jid = table.selected_jid
            # a running job's latest intermediate result shows as its score, as in a live run
            await wait_for(pilot, lambda: str(table.get_cell(str(jid), "score")).strip() == "0.5")
            await wait_for(pilot, lambda: len(job_pids(tmp_path, jid)) == 2)
            pids = job_pids(tmp_path, jid)
            await pilot.press("s", "y")
            await wait_for(pilot, lambda: state.jobs[jid].status == "STOPPED")
            assert gone(pids)
            assert conn.get_job(jid, eid)["status"] == "STOPPED"
            await pilot.press("S", "y")
            await wait_for(pilot, lambda: state.status == "STOPPED")
            await pilot.press("q")
        assert app.return_value == 130
        assert proc.wait(20) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_watching_an_experiment_that_fails_says_why(tmp_path):
    assert cli("init", "--cpu", "1", cwd=tmp_path).returncode == 0
    gate = tmp_path / "go"  # the job fails only once the watcher has seen it run
    write_script(tmp_path, "job.sh", f"while [ ! -e {gate} ]; do sleep 0.05; done\nexit 3")
    write_experiment(tmp_path, n_samples=2, n_parallel=1)
    proc = cli_popen(
        "run",
        "--headless",
        "experiment.json",
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    conn = TinyDBConnector(str(tmp_path / ".aup"))
    try:
        deadline = time.monotonic() + 20
        while conn.latest_experiment() is None:
            assert time.monotonic() < deadline, "the headless run did not start"
            time.sleep(0.05)
        app = AupApp(str(tmp_path / ".aup"), connector=conn, watch=conn.latest_experiment()["eid"])
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await wait_for(pilot, lambda: dashboard(app).state.running == 1)
            gate.touch()
            await wait_for(pilot, lambda: dashboard(app).state.status == "FAILED")
            await wait_for(
                pilot, lambda: any("failed:" in str(t.render()) for t in app.screen.query("Toast"))
            )
            toast = next(str(t.render()) for t in app.screen.query("Toast") if "failed:" in str(t.render()))
            assert toast.startswith("experiment ") and "job.sh exited with status 3" in toast
        assert proc.wait(20) == 1
        # opened later, the failed experiment still says why
        later = AupApp(str(tmp_path / ".aup"), connector=conn)
        async with later.run_test(size=SIZE, notifications=True) as pilot:
            await wait_for(
                pilot, lambda: any("failed:" in str(t.render()) for t in later.screen.query("Toast"))
            )
    finally:
        conn.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- what `aup-tui` shows with no experiment chosen ---------------------------------------------


async def test_empty_state_without_aup_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    app = AupApp(None)
    async with app.run_test(size=(80, 24)) as pilot:
        assert isinstance(app.screen, EmptyScreen)
        text = str(app.screen.query_one("#empty-text").render())
        assert "aup-tui init --cpu 2" in text
        await pilot.press("q")
    assert app.return_value == 0


async def test_empty_state_without_experiments(tmp_path):
    init_aup(str(tmp_path / ".aup"), cpu=1)
    app = AupApp(str(tmp_path / ".aup"))
    async with app.run_test(size=(80, 24)):
        assert isinstance(app.screen, EmptyScreen)
        assert "aup-tui run experiment.json" in str(app.screen.query_one("#empty-text").render())


def two_experiments(tmp_path: Path) -> str:
    auppath = str(tmp_path / ".aup")
    init_aup(auppath, cpu=1)
    conn = TinyDBConnector(auppath)
    for name in ("first", "second"):
        eid = conn.start_experiment("me", name, {}, n_samples=2, target="max", workingdir=str(tmp_path))
        jid = conn.new_jid()
        conn.start_job(eid, jid, {"x": 1}, 1, "cpu:0", 1)
        conn.end_job(eid, jid, 0.5, "FINISHED", values=[0.5])
        conn.end_experiment(eid, "FINISHED", best_jid=jid, best_score=0.5)
    conn.close()
    return auppath


async def test_picker_lists_experiments_newest_first_and_opens_one(tmp_path):
    auppath = two_experiments(tmp_path)
    app = AupApp(auppath)
    async with app.run_test(size=(80, 24)) as pilot:
        assert isinstance(app.screen, PickerScreen)
        from textual.widgets import DataTable

        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        assert str(table.get_cell_at((0, table.get_column_index("name")))) == "second"
        assert str(table.get_cell_at((0, table.get_column_index("status")))) == "finished"
        assert str(table.get_cell_at((0, table.get_column_index("best")))) == "0.5 (2)"
        await pilot.press("G")
        assert table.cursor_row == 1
        await pilot.press("g")
        assert table.cursor_row == 0
        await pilot.press("r")
        await wait_for(pilot, lambda: table.row_count == 2 and not table.loading)
        await pilot.press("j", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await wait_for(pilot, lambda: app.screen.state.name == "first")
        assert app.screen.query_one(JobTable).row_count == 1
        await pilot.press("escape")
        assert isinstance(app.screen, PickerScreen)


async def test_shift_e_on_a_store_dashboard_opens_the_experiments(tmp_path):
    auppath = two_experiments(tmp_path)
    conn = TinyDBConnector(auppath)
    app = AupApp(auppath, connector=conn, watch=2)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(
            pilot, lambda: isinstance(app.screen, DashboardScreen) and app.screen.state.name == "second"
        )
        assert app.screen.query_one(JobTable).row_count == 1
        await pilot.press("E")  # `e` exports (tests/test_export.py)
        await wait_for(pilot, lambda: isinstance(app.screen, PickerScreen))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await pilot.press("escape")
        assert isinstance(app.screen, PickerScreen)
        await pilot.press("question_mark")
        from aup_tui.screens.help import HelpScreen

        assert isinstance(app.screen, HelpScreen)
        assert any(key == "r" for _, key, _ in app.screen.rows)
        await pilot.press("escape")
        assert isinstance(app.screen, PickerScreen)
        await pilot.press("q")
    assert app.return_value == 0  # a finished experiment that is only looked at
