"""Every proposer runs a real experiment to FINISHED: real job processes on the CPU manager, the
job configs on disk carrying the keys each proposer adds, hyperband's rungs waited for."""

from __future__ import annotations

import json
import sys

import pytest
from aup_tui_backends.config import load_experiment
from aup_tui_backends.experiment import Experiment
from helpers import cli, write_experiment, write_script

PLANE = [{"name": "x", "type": "float", "range": [-5, 5]}, {"name": "y", "type": "int", "range": [-3, 3]}]

RUNS = {  # proposer → (its keys, jobs it runs)
    "random": ({"n_samples": 5}, 5),
    "sequence": ({"n_samples": 5}, 5),
    "hyperopt": ({"n_samples": 5}, 5),
    "tpe": ({"n_samples": 5}, 5),
    "cmaes": ({"n_samples": 5}, 5),
    "qmc": ({"n_samples": 5}, 5),
    "gp": ({"n_samples": 5}, 5),
    "spearmint": ({"n_samples": 5}, 5),
    "hyperband": ({"max_iter": 3, "eta": 3}, 6),  # 3 configs × 1, the best × 3; 2 configs × 3
    "bohb": ({"min_budget": 1, "max_budget": 3, "n_iterations": 1}, 4),  # 3 × 1, the best × 3
}


def job_script(folder):
    """A job that reports one result per unit of budget, the last one (x-1)² + y²."""
    return write_script(
        folder,
        "quad.py",
        """
        import json, sys
        cfg = json.load(open(sys.argv[1]))
        score = (cfg["x"] - 1) ** 2 + cfg["y"] ** 2
        for step in range(int(cfg.get("n_iterations", 1)), 0, -1):
            print(f"#Auptimizer:{score + step - 1}", flush=True)
    """,
        shebang=f"#!{sys.executable}",
    )


@pytest.mark.parametrize("name", list(RUNS))
def test_each_proposer_runs_an_experiment_to_finished(workdir, name):
    keys, n_jobs = RUNS[name]
    job_script(workdir)
    path = write_experiment(
        workdir, script="./quad.py", proposer=name, target="min", n_parallel=2, parameter_config=PLANE, **keys
    )
    exp = Experiment(load_experiment(path), auppath=str(workdir / ".aup"))
    result = exp.run()
    assert result.status == "FINISHED"
    jobs = exp.connector.jobs(result.eid)
    assert len(jobs) == n_jobs and all(job["status"] == "FINISHED" for job in jobs)
    adds = {"hyperopt": {"tid"}, "hyperband": {"tid", "n_iterations"}, "bohb": {"tid", "n_iterations"}}
    for job in jobs:
        on_disk = json.loads((workdir / "jobs" / f"{job['jid']}.json").read_text())
        assert on_disk["job_id"] == job["jid"]
        assert set(on_disk) == {"x", "y", "job_id"} | adds.get(name, set())
        assert type(on_disk["x"]) is float and -5 <= on_disk["x"] <= 5
        assert type(on_disk["y"]) is int and -3 <= on_disk["y"] <= 3
        assert job["score"] == pytest.approx((on_disk["x"] - 1) ** 2 + on_disk["y"] ** 2)
    if name == "hyperband":
        budgets = sorted(
            json.loads((workdir / "jobs" / f"{j['jid']}.json").read_text())["n_iterations"] for j in jobs
        )
        assert budgets == [1, 1, 1, 3, 3, 3]
        best_first_rung = min((j for j in jobs if j["config"]["n_iterations"] == 1), key=lambda j: j["score"])
        promoted = [
            j
            for j in jobs
            if j["config"]["n_iterations"] == 3 and j["config"]["x"] == best_first_rung["config"]["x"]
        ]
        assert len(promoted) == 1


def test_hyperband_through_the_cli_headless(workdir):
    job_script(workdir)
    write_experiment(
        workdir,
        script="./quad.py",
        proposer="hyperband",
        target="min",
        n_parallel=2,
        parameter_config=PLANE,
        max_iter=9,
        eta=3,
    )
    run = cli("run", "--headless", "experiment.json", cwd=workdir, timeout=120)
    assert run.returncode == 0, run.stderr
    status = json.loads(cli("status", "--json", cwd=workdir).stdout)
    assert status["status"] == "FINISHED" and status["n_samples"] == 22
    assert len(status["jobs"]) == 22 and {job["status"] for job in status["jobs"]} == {"FINISHED"}


def test_a_proposer_key_mistake_is_one_line_from_the_cli(workdir):
    job_script(workdir)
    write_experiment(workdir, script="./quad.py", proposer="hyperband", parameter_config=PLANE, eta=1)
    run = cli("run", "--headless", "experiment.json", cwd=workdir)
    assert run.returncode == 1
    assert (
        run.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "eta in "
            + str(workdir / "experiment.json")
            + " must be a whole number of at least 2 (default 3), got 1"
        )
    )
    assert len(run.stderr.strip().splitlines()) == 1


def test_hyperband_runs_its_whole_schedule_when_jobs_are_stopped_early(workdir):
    """An early-stopped job has no score; the rung must still complete (it counts as the worst),
    or the experiment would end after the first rung."""
    write_script(
        workdir,
        "steps.py",
        """
        import json, sys, threading
        cfg = json.load(open(sys.argv[1]))
        for _ in range(int(cfg["n_iterations"])):
            print(f"#Auptimizer:{cfg['v']}", flush=True)
        if cfg["v"] == 9:
            threading.Event().wait()  # a hopeless job that would run on: only the policy ends it
    """,
        shebang=f"#!{sys.executable}",
    )
    path = write_experiment(
        workdir,
        script="./steps.py",
        proposer="hyperband",
        engine="sequence",
        target="min",
        n_parallel=1,
        max_iter=3,
        eta=3,
        parameter_config=[{"name": "v", "type": "choice", "range": [1, 9, 2]}],
        resource_args={"early_stop": {"aup_policy": "median", "aup_policy_steps": 1}},
    )
    exp = Experiment(load_experiment(path), auppath=str(workdir / ".aup"))
    result = exp.run()
    assert result.status == "FINISHED"
    jobs = sorted(exp.connector.jobs(result.eid), key=lambda j: j["jid"])
    assert [(j["config"]["v"], j["config"]["n_iterations"], j["status"]) for j in jobs] == [
        (1, 1, "FINISHED"),
        (9, 1, "EARLY_STOPPED"),
        (2, 1, "FINISHED"),  # bracket 1, rung 1
        (1, 3, "FINISHED"),  # the best goes on at 3x the budget
        (1, 3, "FINISHED"),
        (9, 3, "EARLY_STOPPED"),  # bracket 2
    ]
