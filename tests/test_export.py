"""`aup-tui export` and `e` in the dashboard, on a store recorded from a real run: two parameters,
jobs reporting several results (Auptimizer's `multi_res_labels`), a job that fails and is retried."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from aup_tui_backends.store import TinyDBConnector
from helpers import cli, write_script

from aup_tui.app import AupApp
from aup_tui.screens.dashboard import DashboardScreen

COLUMNS = [
    "jid",
    "status",
    "score",
    "x",
    "mode",
    "seconds",
    "flops",
    "resource",
    "attempt",
    "start",
    "end",
    "duration",
]

# x in {0, 1}, mode in {ok, fail}: `fail` with x < 0.5 exits without a result, so fails (twice:
# one retry); every other job reports twice, the last line `<score>,<seconds>,<flops>`.
JOB = """
    import json, sys
    c = json.load(open(sys.argv[1]))
    x, mode = c["x"], c["mode"]
    if mode == "fail" and x < 0.5:
        print("no result")
        sys.exit(3)
    print(f"#Auptimizer:{x / 2},1.5,7")
    print(f"#Auptimizer:{x},2.5,{len(mode)}")
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A folder whose `.aup` holds experiment 1, run for real with `aup-tui run --headless`."""
    folder = tmp_path_factory.mktemp("recorded")
    assert cli("init", "--cpu", "2", cwd=folder).returncode == 0
    write_script(folder, "job.py", JOB, shebang=f"#!{sys.executable}")
    experiment = {
        "name": "two params",
        "script": "./job.py",
        "workingdir": str(folder),
        "resource": "cpu",
        "n_parallel": 2,
        "n_samples": 4,
        "target": "max",
        "proposer": "sequence",
        "parameter_config": [
            {"name": "x", "range": [0, 1], "type": "float", "n": 2},
            {"name": "mode", "range": ["ok", "fail"], "type": "choice"},
        ],
        "resource_args": {"multi_res_labels": ["seconds", "flops"]},
        "job_failure": {"ignore_fail": True, "job_retries": 1},
    }
    (folder / "exp.json").write_text(json.dumps(experiment))
    run = cli("run", "--headless", "exp.json", cwd=folder, timeout=120)
    assert run.returncode == 0, run.stderr
    # experiment 2 (the latest): a parameter named `score`, more results than labels
    write_script(folder, "three.sh", 'echo "#Auptimizer:0.25,3,4"')
    collide = {
        **experiment,
        "name": "collide",
        "script": "./three.sh",
        "n_samples": 1,
        "parameter_config": [{"name": "score", "range": [0.5], "type": "choice"}],
        "resource_args": {"multi_res_labels": ["time"]},
    }
    (folder / "collide.json").write_text(json.dumps(collide))
    run = cli("run", "--headless", "collide.json", cwd=folder, timeout=120)
    assert run.returncode == 0, run.stderr
    return folder


def export(recorded: Path, cwd: Path, *args: str):
    return cli("export", "--aup", str(recorded / ".aup"), *args, cwd=cwd)


def test_default_export_is_the_latest_experiment_as_csv_here(recorded, tmp_path):
    out = export(recorded, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "exported 1 job of experiment 2 to collide-e2.csv"
    (row,) = csv.DictReader(io.StringIO((tmp_path / "collide-e2.csv").read_text()))
    # the parameter `score` does not hide the score; Auptimizer's labels name the values after
    # the score, and a value no label names is `value N`
    assert list(row)[:6] == ["jid", "status", "score", "param.score", "time", "value 3"]
    assert (row["score"], row["param.score"], row["time"], row["value 3"]) == ("0.25", "0.5", "3.0", "4.0")


def test_csv_has_a_column_per_parameter_and_result(recorded, tmp_path):
    out = export(recorded, tmp_path, "1")
    assert out.returncode == 0, out.stderr
    path = tmp_path / "two_params-e1.csv"  # <experiment name>-e<eid>.csv in the current folder
    assert out.stdout.strip() == "exported 4 jobs of experiment 1 to two_params-e1.csv"
    reader = csv.DictReader(io.StringIO(path.read_text()))
    assert reader.fieldnames == COLUMNS
    rows = {int(r["jid"]): r for r in reader}
    assert sorted(rows) == [1, 2, 3, 4]
    by_config = {(float(r["x"]), r["mode"]): r for r in rows.values()}
    assert set(by_config) == {(0.0, "ok"), (1.0, "ok"), (0.0, "fail"), (1.0, "fail")}
    for (x, mode), row in by_config.items():
        if (x, mode) == (0.0, "fail"):  # failed twice: no score, no results, its second attempt
            assert (row["status"], row["score"], row["seconds"], row["flops"]) == ("FAILED", "", "", "")
            assert row["attempt"] == "2"
        else:  # the last reported line: the score, then the labelled results
            assert row["status"] == "FINISHED" and row["attempt"] == "1"
            assert (float(row["score"]), float(row["seconds"]), float(row["flops"])) == (x, 2.5, len(mode))
        assert row["resource"] in ("cpu0", "cpu1")
        start, end = datetime.fromisoformat(row["start"]), datetime.fromisoformat(row["end"])
        assert start.tzinfo is not None and end.tzinfo is not None  # local time with its offset
        assert abs(start.timestamp() - time.time()) < 600
        assert 0 <= float(row["duration"]) <= (end - start).total_seconds() + 1


def test_json_to_stdout_is_a_list_of_objects_with_numbers_and_nulls(recorded, tmp_path):
    out = export(recorded, tmp_path, "1", "--format", "json", "-o", "-")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [list(r) for r in rows] == [COLUMNS] * 4
    assert [r["jid"] for r in rows] == [1, 2, 3, 4]
    failed = [r for r in rows if r["status"] == "FAILED"]
    assert len(failed) == 1 and failed[0]["score"] is None and failed[0]["seconds"] is None
    finished = [r for r in rows if r["status"] == "FINISHED"]
    assert len(finished) == 3
    for r in finished:
        assert isinstance(r["score"], float) and r["seconds"] == 2.5 and isinstance(r["duration"], float)
        assert isinstance(r["x"], float) and r["mode"] in ("ok", "fail") and r["attempt"] == 1
    assert "NaN" not in out.stdout and "Infinity" not in out.stdout
    assert list(tmp_path.iterdir()) == []  # `-o -` writes no file


def test_format_follows_the_output_files_extension(recorded, tmp_path):
    out = export(recorded, tmp_path, "1", "-o", "jobs.json")
    assert out.returncode == 0, out.stderr
    assert len(json.loads((tmp_path / "jobs.json").read_text())) == 4
    out = export(recorded, tmp_path, "1", "--format", "csv", "-o", "jobs.txt")
    assert (tmp_path / "jobs.txt").read_text().startswith("jid,status,score,x,mode,")


def test_errors_are_one_line_and_exit_1(recorded, tmp_path, monkeypatch):
    out = export(recorded, tmp_path, "7")
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "no experiment 7" in out.stderr
    out = export(recorded, tmp_path, "-o", str(tmp_path / "missing" / "jobs.csv"))
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "can't write" in out.stderr and "missing/jobs.csv" in out.stderr
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aup to fall back on
    out = cli("export", cwd=tmp_path)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and ".aup" in out.stderr
    assert "Traceback" not in out.stderr


async def test_e_in_the_dashboard_writes_the_csv_here_and_says_where(recorded, tmp_path, monkeypatch):
    shutil.copytree(recorded / ".aup", tmp_path / ".aup")
    monkeypatch.chdir(tmp_path)
    auppath = str(tmp_path / ".aup")
    conn = TinyDBConnector(auppath)
    app = AupApp(auppath, connector=conn, watch=1)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        deadline = time.monotonic() + 15
        while not (isinstance(app.screen, DashboardScreen) and len(app.screen.state.jobs) == 4):
            assert time.monotonic() < deadline, "the dashboard did not load the experiment"
            await pilot.pause(0.05)
        await pilot.press("e")
        await app.workers.wait_for_complete()
        await pilot.pause()
        path = tmp_path / "two_params-e1.csv"
        toasts = [str(t.render()) for t in app.screen.query("Toast")]
        assert any(f"exported 4 jobs to {path}" in t for t in toasts), toasts
        assert next(csv.reader(io.StringIO(path.read_text()))) == COLUMNS
        assert len(path.read_text().splitlines()) == 5
        await pilot.press("question_mark")  # help lists it
        assert any(key == "e" and "Export" in what for _, key, what in app.screen.rows)
        await pilot.press("escape")
        await pilot.press("q")
