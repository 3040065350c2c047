"""Parameter importance in the engine (aup_tui_backends.analysis): the parameter that decides the
score ranks first, too few jobs say why, the space is read off the values when not given, and
Optuna is not loaded by importing the module."""

from __future__ import annotations

import random
import subprocess
import sys

from aup_tui_backends.analysis import MAX_JOBS, MIN_JOBS, inferred_config, parameter_importance

SPACE = [
    {"name": "lr", "type": "float", "range": [0.0, 1.0]},
    {"name": "noise", "type": "float", "range": [0.0, 1.0]},
    {"name": "layers", "type": "int", "range": [1, 6]},
    {"name": "optimizer", "type": "choice", "range": ["adam", "sgd", [1, 2]]},
]


def synthetic_jobs(n: int, seed: int = 1) -> list[tuple[dict, float | None]]:
    """`n` jobs whose score is decided by lr (best at 0.3); the rest is noise."""
    rng = random.Random(seed)
    jobs: list[tuple[dict, float | None]] = []
    for _ in range(n):
        config = {
            "lr": rng.random(),
            "noise": rng.random(),
            "layers": rng.randint(1, 6),
            "optimizer": rng.choice(["adam", "sgd", [1, 2]]),
        }
        jobs.append((config, 1 - 10 * (config["lr"] - 0.3) ** 2 + 0.01 * rng.random()))
    return jobs


def test_the_parameter_that_decides_the_score_ranks_first() -> None:
    for maximize, sign in ((True, 1), (False, -1)):
        jobs = [(c, sign * s) for c, s in synthetic_jobs(150) if s is not None]
        result = parameter_importance(jobs, maximize, SPACE)
        assert result.reason is None
        assert list(result.values)[0] == "lr", result.values
        assert set(result.values) == {"lr", "noise", "layers", "optimizer"}
        assert result.values["lr"] > 0.5
        assert result.jobs == 150
        assert result.method == "PED-ANOVA"


def test_without_a_parameter_config_the_space_is_read_off_the_values() -> None:
    result = parameter_importance(synthetic_jobs(150, seed=2), True)
    assert list(result.values)[0] == "lr"
    space = {p["name"]: p for p in inferred_config([c for c, _ in synthetic_jobs(20)])}
    assert space["lr"]["type"] == "float" and space["layers"]["type"] == "int"
    assert space["optimizer"]["type"] == "choice"


def test_too_few_scored_jobs_say_why() -> None:
    jobs = synthetic_jobs(MIN_JOBS - 1) + [({"lr": 0.5}, None), ({"lr": 0.1}, float("nan"))]
    result = parameter_importance(jobs, True, SPACE)
    assert not result.values
    assert result.reason == f"{MIN_JOBS - 1} jobs finished with a score: importance needs at least {MIN_JOBS}"


def test_a_space_where_nothing_varies_says_so() -> None:
    jobs = [({"lr": 0.5, "opt": "adam"}, float(i)) for i in range(10)]
    result = parameter_importance(jobs, True)
    assert result.reason == "no parameter takes more than one value"


def test_importing_the_engine_module_does_not_load_optuna() -> None:
    code = "import sys, aup_tui_backends.analysis; print('optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_many_jobs_are_sampled_and_still_rank_the_deciding_parameter_first() -> None:
    result = parameter_importance(synthetic_jobs(MAX_JOBS + 500, seed=3), True, SPACE)
    assert result.jobs == MAX_JOBS and result.sampled_from == MAX_JOBS + 500
    assert list(result.values)[0] == "lr"


def test_jobs_whose_choice_is_not_one_of_the_json_values_lie_outside_the_space() -> None:
    # `true` is not the choice `1` (Python says True == 1), an object matches whatever its key
    # order: the analysis and the proposers' replay (one function) agree on what lies inside.
    from aup_tui_backends.proposers.optuna import to_optuna

    space = [
        {"name": "flag", "type": "choice", "range": [0, 1]},
        {"name": "opt", "type": "choice", "range": [{"name": "adam", "lr": 1}, "sgd"]},
        {"name": "lr", "type": "float", "range": [0.0, 1.0]},
    ]
    assert to_optuna(space, {"flag": 1, "opt": {"lr": 1, "name": "adam"}, "lr": 0.5}) == {
        "flag": 1,
        "opt": 0,
        "lr": 0.5,
    }
    assert to_optuna(space, {"flag": True, "opt": "sgd", "lr": 0.5}) is None
    assert to_optuna(space, {"flag": 0, "opt": "sgd", "lr": True}) is None  # not a number either
    rng = random.Random(3)
    jobs = []
    for i in range(MIN_JOBS + 4):
        lr = rng.random()
        jobs.append(({"flag": i % 2, "opt": "sgd", "lr": lr}, lr))
    edited = [({"flag": bool(c["flag"]), "opt": c["opt"], "lr": c["lr"]}, s) for c, s in jobs]
    assert parameter_importance(jobs, True, space).reason is None
    result = parameter_importance(edited, True, space)
    assert result.reason is not None and "inside the parameter space" in result.reason
