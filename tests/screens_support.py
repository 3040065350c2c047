"""Shared by the screen tests: a minimal host app and real experiments on a tmp `.aup`."""

from __future__ import annotations

import queue
import shutil
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aup_tui_backends import EventBus, Experiment, TinyDBConnector
from aup_tui_backends.config import validate_experiment
from aup_tui_backends.events import PassiveResultWanted
from aup_tui_backends.setup import init_aup
from textual.app import App
from textual.screen import Screen

ROOT = Path(__file__).resolve().parent.parent


class Host(App):
    """Pushes one screen at start and records what it was dismissed with."""

    def __init__(self, make_screen: Callable[[], Screen]) -> None:
        super().__init__()
        self.make_screen = make_screen
        self.dismissed: list[Any] = []

    def on_mount(self) -> None:
        self.push_screen(self.make_screen(), callback=self.dismissed.append)


async def shown_in_palette(pilot, query: str) -> list[str]:
    """Open the command palette, type `query`, and read the commands it lists (then close it)."""
    from textual.command import CommandList, CommandPalette

    await pilot.press("ctrl+p")
    await pilot.pause()
    assert isinstance(pilot.app.screen, CommandPalette)
    await pilot.press(*query)
    await pilot.pause(0.4)
    options = pilot.app.screen.query_one(CommandList)
    shown = [options.get_option_at_index(i).prompt for i in range(options.option_count)]
    await pilot.press("escape")
    await pilot.pause()
    return [str(getattr(prompt, "plain", prompt)).split("\n")[0] for prompt in shown]


async def wait_until(pilot, predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.05) -> None:
    """Let the app run until `predicate()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(step)


class RunningExperiment:
    """A real Experiment on a real store, run in a thread as the app runs it."""

    def __init__(self, tmp_path: Path, config: dict, *, cpu: int = 0, passive: bool = False) -> None:
        self.auppath = str(tmp_path / ".aup")
        init_aup(self.auppath, cpu=cpu, passive=passive)
        self.connector = TinyDBConnector(self.auppath)
        self.bus = EventBus()
        self.wanted: queue.SimpleQueue[PassiveResultWanted] = queue.SimpleQueue()
        self.bus.subscribe(lambda e: self.wanted.put(e) if isinstance(e, PassiveResultWanted) else None)
        cfg = validate_experiment({"workingdir": str(tmp_path), **config}, base_dir=str(tmp_path))
        self.experiment = Experiment(cfg, self.auppath, self.connector, self.bus)
        self.thread = threading.Thread(target=self.experiment.run, daemon=True)
        self.thread.start()
        assert self.experiment.started.wait(10), "experiment did not start"

    @property
    def eid(self) -> int:
        return self.experiment.eid

    @property
    def rm(self):
        return self.experiment.resource_manager

    def next_request(self, timeout: float = 10.0) -> PassiveResultWanted:
        return self.wanted.get(timeout=timeout)

    def job(self, jid: int) -> dict:
        return self.connector.get_job(jid, self.eid)

    def wait_job(self, jid: int, statuses: tuple[str, ...], timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(jid)
            if job and job["status"] in statuses:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {jid} is {job and job['status']}, expected one of {statuses}")
            time.sleep(0.02)

    def close(self) -> None:
        self.experiment.stop()
        self.thread.join(10)
        self.connector.close()


def passive_experiment(tmp_path: Path, n_samples: int = 1) -> RunningExperiment:
    shutil.copy(ROOT / "examples" / "rosenbrock" / "rosenbrock.py", tmp_path / "rosenbrock.py")
    return RunningExperiment(
        tmp_path,
        {
            "name": "by-hand",
            "script": "./rosenbrock.py",
            "resource": "passive",
            "n_samples": n_samples,
            "target": "min",
            "proposer": "random",
            "random_seed": 7,
            "parameter_config": [{"name": "x", "range": [-2, 2], "type": "float"}],
        },
        passive=True,
    )


def write_script(path: Path, body: str) -> Path:
    """An executable job script run by this Python."""
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# -- deterministic job data for the job detail (snapshots) ------------------------------------

T0 = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC

LOG_ATTEMPT_1 = "epoch 1 loss=2.31\nTraceback (most recent call last):\nRuntimeError: CUDA out of memory\n"
LOG_ATTEMPT_2 = (
    "".join(
        f"epoch {i} loss={v:.3f}\n#Auptimizer:{v}\n"
        for i, v in enumerate((2.4, 1.1, 0.62, 0.31, 0.2, 0.15, 0.12, 0.11), 1)
    )
    + "rosenbrock(0.9000, 0.8100) = 0.110000\n"
)


def seed_finished_job(tmp_path: Path) -> tuple[TinyDBConnector, int, int]:
    """A store holding one job that failed its first attempt and finished on its second."""
    init_aup(str(tmp_path / ".aup"), cpu=2)
    conn = TinyDBConnector(str(tmp_path / ".aup"))
    eid = conn.start_experiment(
        "me", "rosenbrock", {}, workingdir=str(tmp_path), target="min", resource="cpu", n_samples=4
    )
    conn.save_labels(eid, ["loss", "accuracy"])
    jid = conn.new_jid()
    config = {"x": 0.9, "y": 0.81, "lr": 0.001, "optimizer": "adam"}
    conn.start_job(eid, jid, config, 1, "cpu:cpu0", 1)
    conn.end_job(eid, jid, None, "FAILED", error="train.py exited with status 1", final=False)
    conn.start_job(eid, jid, config, 2, "cpu:cpu1", 2)
    values = (2.4, 1.1, 0.62, 0.31, 0.2, 0.15, 0.12, 0.11)
    for i, v in enumerate(values):
        conn.save_intermediate_result(eid, jid, i, [v, 0.5 + i * 0.05])
    conn.flush()
    conn.end_job(eid, jid, 0.11, "FINISHED", values=[0.11, 0.85])
    conn.update_job(
        eid,
        jid,
        start=T0,
        end=T0 + 95.5,
        attempts=[
            {
                "attempt": 1,
                "rid": 1,
                "resource": "cpu:cpu0",
                "start": T0,
                "end": T0 + 4.2,
                "status": "FAILED",
                "error": "train.py exited with status 1",
                "score": None,
            },
            {
                "attempt": 2,
                "rid": 2,
                "resource": "cpu:cpu1",
                "start": T0 + 5.0,
                "end": T0 + 95.5,
                "status": "FINISHED",
                "error": None,
                "score": 0.11,
            },
        ],
    )
    jobs = tmp_path / "jobs"
    jobs.mkdir(exist_ok=True)
    (jobs / f"{jid}.1.out").write_text(LOG_ATTEMPT_1)
    (jobs / f"{jid}.2.out").write_text(LOG_ATTEMPT_2)
    return conn, eid, jid
