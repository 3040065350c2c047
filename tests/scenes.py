"""Deterministic demo scenes: a fixed clock and fixed scores, for snapshots, tests and screenshots.

`python screenshots/make.py` renders the same scenes, so the README's pictures match the tests.
"""

from __future__ import annotations

import math
import random

from aup_tui.state import ExperimentState, JobRow, PassiveWant

#: 2026-01-01 09:00:00 UTC — the scenes' "now" is T0 + NOW_OFFSET.
T0 = 1767258000.0
NOW_OFFSET = 754.0


def CLOCK() -> float:
    """The scenes' fixed clock."""
    return T0 + NOW_OFFSET


def rosenbrock(x: float, y: float) -> float:
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def demo_state(
    n_jobs: int = 24, n_samples: int = 40, running: int = 2, waiting: bool = False, status: str = "RUNNING"
) -> ExperimentState:
    """A rosenbrock experiment part-way through: finished, failed, stopped and running jobs."""
    rng = random.Random(7)
    st = ExperimentState(eid=3, name="rosenbrock", status=status, n_samples=n_samples, target="min")
    st.resource = "cpu"
    st.start = T0
    t = T0 + 2.0
    finished_order = []
    for jid in range(1, n_jobs + 1):
        x, y = round(rng.uniform(-2, 2), 4), round(rng.uniform(-1, 3), 4)
        row = JobRow(
            jid=jid, config={"x": x, "y": y}, resource=f"cpu:cpu{(jid - 1) % 2}", start=t, attempts=1
        )
        st.jobs[jid] = row
        st.counts["QUEUED"] += 1
        live_from = n_jobs - running - (1 if waiting else 0)
        if jid > live_from:
            status_j = "WAITING" if waiting and jid == n_jobs else "RUNNING"
            st._set_status(row, status_j)
            row.score = round(rosenbrock(x, y) * 1.5, 4) if status_j == "RUNNING" else None
            row.results = 2
        elif jid % 11 == 0:
            st._set_status(row, "FAILED")
            row.error = "rosenbrock.py exited with code 1"
            row.end = t + 3.5
        elif jid % 7 == 0:
            st._set_status(row, "EARLY_STOPPED")
            row.score = round(rosenbrock(x, y) * 2, 4)
            row.end = t + 2.5
            row.error = "early stopped after 2 results"
        else:
            st._set_status(row, "FINISHED")
            row.score = round(rosenbrock(x, y), 4)
            row.end = t + 4.0 + (jid % 5) * 0.7
            finished_order.append(jid)
        if jid == 5:
            row.attempts = 2
        t += 27.0
    for jid in finished_order:
        st._scored_job(jid, st.jobs[jid].score)
    if waiting:
        jid = n_jobs
        st.waiting[jid] = PassiveWant(
            3,
            jid,
            f"cd /home/me/rosenbrock && ./rosenbrock.py jobs/{jid}.json",
            "/home/me/rosenbrock",
            f"/home/me/rosenbrock/jobs/{jid}.json",
        )
    if status != "RUNNING":
        st.end = T0 + NOW_OFFSET - 10
    return st


def picker_rows() -> list[dict]:
    """Three experiments of one .aup folder."""
    return [
        {
            "eid": 1,
            "name": "rosenbrock",
            "status": "FINISHED",
            "n_samples": 20,
            "start": T0 - 7200,
            "end": T0 - 7000,
            "best_jid": 14,
            "best_score": 0.0421,
            "counts": {"FINISHED": 19, "FAILED": 1},
        },
        {
            "eid": 2,
            "name": "mnist-lr",
            "status": "STOPPED",
            "n_samples": 50,
            "start": T0 - 3600,
            "end": T0 - 2400,
            "best_jid": 77,
            "best_score": 0.9812,
            "counts": {"FINISHED": 30, "STOPPED": 2},
        },
        {
            "eid": 3,
            "name": "rosenbrock",
            "status": "RUNNING",
            "n_samples": 40,
            "start": T0,
            "end": None,
            "best_jid": None,
            "best_score": None,
            "counts": {"FINISHED": 18, "RUNNING": 2, "FAILED": 2},
        },
    ]


class RecordingSource:
    """Stands in for a running experiment: records what the dashboard asked of it."""

    live = True

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def stop_job(self, jid: int) -> bool:
        self.calls.append(("stop_job", jid))
        return True

    def stop_experiment(self) -> None:
        self.calls.append(("stop_experiment",))

    def submit(self, jid: int, text: str) -> float:
        self.calls.append(("submit", jid, text))
        return float(text)

    def mark_failed(self, jid: int, reason: str) -> None:
        self.calls.append(("mark_failed", jid, reason))


def dashboard_app(theme: str = "aup-dark", source: bool = True, **kw):
    """The demo dashboard; with `source`, its stop keys and passive form talk to a RecordingSource."""
    from aup_tui.app import AupApp

    return AupApp(
        state=demo_state(**kw),
        clock=CLOCK,
        theme=theme,
        find=False,
        demo_source=RecordingSource() if source else None,
    )


def picker_app(theme: str = "aup-dark"):
    from aup_tui.app import AupApp

    return AupApp(picker_rows=picker_rows(), clock=CLOCK, theme=theme, find=False)


def empty_app(theme: str = "aup-dark"):
    from aup_tui.app import AupApp

    app = AupApp(clock=CLOCK, theme=theme, find=False)
    app.empty_reason = (True, "/home/me/project", "")
    return app


__all__ = ["T0", "CLOCK", "demo_state", "picker_rows", "dashboard_app", "picker_app", "empty_app", "math"]
