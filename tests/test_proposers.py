"""Proposers: the parameters each job gets, as a person running random or grid search expects."""

import json

import pytest
from aup_tui_backends.config import validate_experiment
from aup_tui_backends.errors import ConfigError
from aup_tui_backends.proposer_catalog import PROPOSER_SPECS
from aup_tui_backends.proposers import PROPOSERS, RandomProposer, SequenceProposer, get_proposer

PARAMS = [
    {"name": "lr", "type": "float", "range": [0.001, 0.1]},
    {"name": "layers", "type": "int", "range": [1, 4]},
    {"name": "opt", "type": "choice", "range": ["sgd", "adam"]},
]


def config(proposer="random", params=PARAMS, **extra):
    data = {
        "name": "t",
        "script": "t.py",
        "resource": "cpu",
        "target": "max",
        "proposer": proposer,
        "parameter_config": params,
        **extra,
    }
    return validate_experiment(data)


def drain(proposer):
    out = []
    while (params := proposer.get()) is not None:
        out.append(params)
    return out


def test_registry_lists_auptimizers_proposers_and_ours():
    assert list(PROPOSERS) == [
        "random",
        "sequence",
        "spearmint",
        "hyperband",
        "hyperopt",
        "bohb",
        "tpe",
        "gp",
        "cmaes",
        "qmc",
    ]
    assert PROPOSERS["random"] is RandomProposer and PROPOSERS["sequence"] is SequenceProposer
    assert list(PROPOSERS) == list(PROPOSER_SPECS)  # one class per catalogue entry, in its order


def test_random_gives_n_samples_jobs_in_range_with_json_types():
    proposer = get_proposer(config(n_samples=200, random_seed=3))
    jobs = drain(proposer)
    assert len(jobs) == proposer.n_samples == 200
    assert proposer.finished and proposer.get() is None
    for job in jobs:
        assert type(job["lr"]) is float and 0.001 <= job["lr"] <= 0.1
        assert type(job["layers"]) is int and 1 <= job["layers"] <= 4
        assert job["opt"] in ("sgd", "adam")
        assert json.loads(json.dumps(job)) == job
    assert {job["layers"] for job in jobs} == {1, 2, 3, 4}  # both ends of an int range are drawn
    assert {job["opt"] for job in jobs} == {"sgd", "adam"}


def test_same_seed_same_jobs_other_seed_other_jobs():
    first = drain(get_proposer(config(n_samples=5, random_seed=42)))
    again = drain(get_proposer(config(n_samples=5, random_seed=42)))
    other = drain(get_proposer(config(n_samples=5, random_seed=43)))
    assert first == again
    assert first != other


def test_random_does_not_touch_global_random_state():
    import random

    random.seed(1)
    expected = random.random()
    random.seed(1)
    drain(get_proposer(config(n_samples=5, random_seed=9)))
    assert random.random() == expected


def test_sequence_walks_the_grid_first_parameter_fastest():
    params = [
        {"name": "a", "type": "int", "range": [1, 3]},
        {"name": "b", "type": "choice", "range": ["x", "y"]},
    ]
    proposer = get_proposer(config("sequence", params))
    assert proposer.n_samples == 6
    assert drain(proposer) == [
        {"a": 1, "b": "x"},
        {"a": 2, "b": "x"},
        {"a": 3, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "y"},
        {"a": 3, "b": "y"},
    ]
    assert proposer.finished


@pytest.mark.parametrize(
    "param, values",
    [
        ({"type": "float", "range": [0, 1], "n": 5}, [0.0, 0.25, 0.5, 0.75, 1.0]),
        ({"type": "float", "range": [0, 0.3], "interval": 0.1}, [0.0, 0.1, 0.2, 0.3]),
        ({"type": "float", "range": [0, 2]}, [0.0, 1.0, 2.0]),  # Auptimizer's default interval is 1
        ({"type": "int", "range": [0, 10], "interval": 5}, [0, 5, 10]),
        ({"type": "int", "range": [1, 10], "n": 4}, [1, 4, 7, 10]),
        ({"type": "int", "range": [2, 4]}, [2, 3, 4]),
        ({"type": "float", "range": [0, 1], "n": 3, "interval": 0.5}, [0.0, 0.5, 1.0]),  # interval wins
    ],
)
def test_sequence_grid_values(param, values):
    got = [job["p"] for job in drain(get_proposer(config("sequence", [{"name": "p", **param}])))]
    assert got == values
    assert all(type(v) is type(values[0]) for v in got)


def test_sequence_stops_at_n_samples_when_smaller_than_the_grid():
    proposer = get_proposer(config("sequence", [{"name": "k", "type": "int", "range": [1, 10]}], n_samples=3))
    assert proposer.n_samples == 3
    assert [job["k"] for job in drain(proposer)] == [1, 2, 3]


def test_sequence_runs_the_whole_grid_when_n_samples_is_larger_or_zero():
    params = [{"name": "k", "type": "int", "range": [1, 4]}]
    assert len(drain(get_proposer(config("sequence", params, n_samples=100)))) == 4
    assert len(drain(get_proposer(config("sequence", params, n_samples=0)))) == 4


def test_feedback_is_accepted_and_does_not_change_what_comes_next():
    proposer = get_proposer(config(n_samples=2, random_seed=1))
    reference = drain(get_proposer(config(n_samples=2, random_seed=1)))
    first = proposer.get()
    proposer.update(0.5, first)
    proposer.failed(first)
    assert [first, proposer.get()] == reference


def test_unknown_proposer_lists_the_available_ones():
    cfg = config(n_samples=1)
    cfg.proposer = "foo"
    with pytest.raises(ConfigError) as info:
        get_proposer(cfg)
    assert str(info.value) == (
        "unknown proposer 'foo' in experiment.json — available: random, sequence, "
        "spearmint, hyperband, hyperopt, bohb, tpe, gp, cmaes, qmc"
    )


# -- the model-based and multi-fidelity proposers ----------------------------------------------

import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from aup_tui_backends.proposer_catalog import RESERVED_PARAMETER_NAMES  # noqa: E402
from aup_tui_backends.proposers import added_keys  # noqa: E402
from helpers import ROOT  # noqa: E402

PLANE = [{"name": "x", "type": "float", "range": [-5, 5]}, {"name": "y", "type": "float", "range": [-5, 5]}]
BUDGETED = {"hyperband": {"max_iter": 9}, "bohb": {"min_budget": 1, "max_budget": 9}}
LEARNING = ["hyperopt", "tpe", "cmaes", "qmc", "gp", "spearmint", "hyperband", "bohb"]


def quadratic(job):
    return (job["x"] - 1.3) ** 2 + (job["y"] + 2.1) ** 2


def run_loop(proposer, score=quadratic):
    """Serial jobs: every proposal is scored at once; returns the proposals in order."""
    jobs = []
    while (job := proposer.get()) is not None:
        jobs.append(job)
        proposer.update(score(job), job)
    assert proposer.finished
    return jobs


def minimise(name, n_samples=30, seed=0, params=PLANE):
    return get_proposer(
        config(name, params, n_samples=n_samples, random_seed=seed, target="min", **BUDGETED.get(name, {}))
    )


@pytest.mark.parametrize("name", LEARNING)
def test_each_proposer_respects_types_and_ranges_and_adds_its_keys(name):
    proposer = get_proposer(config(name, n_samples=25, random_seed=1, **BUDGETED.get(name, {})))
    jobs = run_loop(proposer, score=lambda job: job["lr"] * job["layers"] + (job["opt"] == "adam"))
    assert len(jobs) == proposer.n_samples
    for job in jobs:
        assert type(job["lr"]) is float and 0.001 <= job["lr"] <= 0.1
        assert type(job["layers"]) is int and 1 <= job["layers"] <= 4
        assert job["opt"] in ("sgd", "adam")
        assert json.loads(json.dumps(job)) == job
        added = set(job) - {"lr", "layers", "opt"}
        assert added == set(proposer.adds) - {"job_id"}  # job_id: the engine writes it for every job


@pytest.mark.parametrize("name, factor", [("hyperopt", 0.75), ("tpe", 0.75), ("gp", 0.75), ("cmaes", 1)])
def test_model_based_proposers_beat_random_search_on_a_quadratic(name, factor):
    """Median best score over 5 seeds at the same budget (CMA-ES needs more than 40 jobs to shine)."""
    budget, seeds = 40, range(5)
    best = {
        which: statistics.median(
            min(quadratic(j) for j in run_loop(minimise(which, budget, seed))) for seed in seeds
        )
        for which in ("random", name)
    }
    assert best[name] < factor * best["random"], best


@pytest.mark.parametrize("name", LEARNING)
def test_failed_jobs_never_crash_a_proposer_and_it_runs_to_the_end(name):
    proposer = minimise(name, n_samples=12)
    given = 0
    while (job := proposer.get()) is not None:
        given += 1
        if given % 2:
            proposer.failed(job)
        else:
            proposer.update(quadratic(job), job)
    assert proposer.finished and given == proposer.n_samples


def test_hyperband_schedule_is_auptimizers_for_max_iter_9_eta_3():
    proposer = minimise("hyperband")
    jobs = run_loop(proposer)
    budgets = [job["n_iterations"] for job in jobs]
    # bracket s=2: 9 configs × 1, 3 × 3, 1 × 9; s=1: 5 × 3, 1 × 9; s=0: 3 × 9
    assert budgets == [1] * 9 + [3] * 3 + [9] + [3] * 5 + [9] + [9] * 3
    assert proposer.n_samples == 22
    assert [job["tid"] for job in jobs] == [*range(9), 0, 1, 2, 0, *range(5), 0, 0, 1, 2]
    assert all(type(b) is int for b in budgets)  # whole budgets are ints, so range(n_iterations) works
    # each rung promotes the best of the one before, best first
    first, second, third = jobs[:9], jobs[9:12], jobs[12]
    strip = [{k: v for k, v in job.items() if k in ("x", "y")} for job in first]
    ranked = sorted(strip, key=quadratic)
    assert [{k: job[k] for k in ("x", "y")} for job in second] == ranked[:3]
    assert {k: third[k] for k in ("x", "y")} == ranked[0]
    assert jobs[18]["x"] == sorted(jobs[13:18], key=quadratic)[0]["x"]


def test_hyperband_skip_last_and_target_max():
    jobs = run_loop(
        get_proposer(config("hyperband", PLANE, max_iter=9, skip_last=1)), score=lambda job: -quadratic(job)
    )
    assert [job["n_iterations"] for job in jobs] == [1] * 9 + [3] * 3 + [3] * 5
    assert [{k: j[k] for k in "xy"} for j in jobs[9:12]] == [
        {k: j[k] for k in "xy"} for j in sorted(jobs[:9], key=quadratic)[:3]
    ]


def test_hyperband_waits_for_its_rung_instead_of_finishing():
    proposer = minimise("hyperband")
    rung = [proposer.get() for _ in range(9)]
    assert proposer.get() is None and not proposer.finished  # waiting, not done
    for job in rung[:-1]:
        proposer.update(quadratic(job), job)
    assert proposer.get() is None and not proposer.finished
    proposer.failed(rung[-1])  # a failed job counts as the worst, it does not stall the bracket
    assert proposer.get()["n_iterations"] == 3


def test_hyperband_keys_are_checked():
    with pytest.raises(ConfigError, match="eta in experiment.json must be a whole number of at least 2"):
        get_proposer(config("hyperband", PLANE, eta=1))
    with pytest.raises(
        ConfigError,
        match='engine "tpe" in experiment.json is not supported by the '
        "hyperband proposer — use random or sequence",
    ):
        get_proposer(config("hyperband", PLANE, engine="tpe"))
    grid = get_proposer(
        config("hyperband", [{"name": "k", "type": "int", "range": [1, 20]}], max_iter=9, engine="sequence")
    )
    assert [job["k"] for job in run_loop(grid, score=lambda j: j["k"])][:9] == list(range(1, 10))


def test_bohb_runs_hpbandsters_iterations_and_opens_new_ones_while_waiting():
    proposer = minimise("bohb")
    jobs = run_loop(proposer)
    # budgets 1, 3, 9; iterations of 9×1 → 3×3 → 1×9, then 3×3 → 1×9, then 3×9, then the first again
    one = [1] * 9 + [3] * 3 + [9]
    assert [job["n_iterations"] for job in jobs] == one + [3] * 3 + [9] + [9] * 3 + one
    assert [job["tid"] for job in jobs] == list(range(33)) and proposer.n_samples == 33
    parallel = minimise("bohb")
    first = [parallel.get() for _ in range(9)]
    nxt = parallel.get()  # the first iteration waits for its rung: the second one starts
    assert [job["n_iterations"] for job in first] == [1] * 9 and nxt["n_iterations"] == 3


def test_bohb_draws_from_its_model_once_a_budget_has_enough_results():
    proposer = get_proposer(
        config("bohb", PLANE, target="min", min_budget=9, max_budget=9, n_iterations=40, random_fraction=0)
    )
    jobs = run_loop(proposer)
    late = statistics.median(quadratic(job) for job in jobs[-10:])
    early = statistics.median(quadratic(job) for job in jobs[:4])  # min_points_in_model 3 + 2: random
    assert late < early / 4


def test_eas_is_refused_with_one_message():
    with pytest.raises(ConfigError) as info:
        config("eas", n_samples=1)
    assert str(info.value) == (
        "proposer 'eas' in experiment.json needs TensorFlow and a DenseNet to grow, "
        "which aup-tui does not ship — use hyperband, bohb or hyperopt to tune a "
        "network's size instead"
    )


@pytest.mark.parametrize(
    "name, module, extra",
    [
        ("gp", "sklearn", "gp"),
        ("spearmint", "sklearn", "gp"),
        ("cmaes", "cmaes", "cmaes"),
        ("qmc", "scipy", "qmc"),
        ("tpe", "optuna", "optuna"),
    ],
)
def test_a_missing_library_is_named_with_its_extra(name, module, extra):
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from aup_tui_backends.config import validate_experiment\n"
        "from aup_tui_backends.errors import ConfigError\n"
        "try:\n"
        f"    validate_experiment({{'name': 't', 'script': 't.sh', 'resource': 'cpu', 'target': 'min',"
        f" 'proposer': {name!r}, 'n_samples': 2, 'parameter_config': [{{'name': 'x'}}]}})\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == (
        f"proposer '{name}' in experiment.json needs {module}, which is not installed "
        f"— pip install 'aup-tui[{extra}]'"
    ), out.stderr


def test_random_search_and_the_cli_help_never_import_the_heavy_libraries():
    heavy = "{'optuna', 'sklearn', 'scipy', 'numpy', 'cmaes'}"
    code = (
        "import sys\n"
        "from aup_tui_backends.config import validate_experiment\n"
        "from aup_tui_backends.proposers import get_proposer\n"
        "cfg = validate_experiment({'name': 't', 'script': 't.sh', 'resource': 'cpu', 'target': 'min',"
        " 'proposer': 'random', 'n_samples': 3, 'parameter_config': [{'name': 'x'}],"
        " 'resource_args': {'early_stop': {'aup_policy': 'curve_fitting', 'aup_policy_steps': 1,"
        " 'curve_fitting_max_iters': 9}}})\n"
        "p = get_proposer(cfg)\n"
        "while (job := p.get()) is not None: p.update(1.0, job)\n"
        f"assert not {heavy} & set(sys.modules), sorted({heavy} & set(sys.modules))\n"
        "import aup_tui.cli\n"
        "try:\n"
        "    aup_tui.cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"assert not {heavy} & set(sys.modules), sorted({heavy} & set(sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr


def test_reserved_parameter_names_cover_every_key_a_proposer_adds():
    assert added_keys() == {
        "job_id": ("spearmint",),
        "n_iterations": ("hyperband", "bohb"),
        "tid": ("hyperband", "hyperopt", "bohb"),
    }
    assert set(added_keys()) <= set(RESERVED_PARAMETER_NAMES)
    with pytest.raises(ConfigError, match="reserved name"):
        config("hyperband", [{"name": "n_iterations", "type": "int", "range": [1, 3]}])


# -- replay: a resumed experiment's proposer rebuilt from the finished jobs --------------------


def interrupted(name, stop_at, lost=(), n_samples=12, **extra):
    """An uninterrupted run's jobs, and the (config, score) history of the same run stopped after
    `stop_at` jobs, the jobs at positions `lost` (running at the stop) missing from it."""
    full = run_loop(get_proposer(config(name, PLANE, n_samples=n_samples, target="min", **extra)))
    history = [(job, quadratic(job)) for i, job in enumerate(full[:stop_at]) if i not in lost]
    return full, history


@pytest.mark.parametrize("name, extra", [("random", {}), ("sequence", {}), ("hyperband", {"max_iter": 9})])
def test_replay_continues_a_deterministic_proposer_exactly_where_it_stopped(name, extra):
    params = (
        PLANE
        if name != "sequence"
        else [{"name": "x", "type": "int", "range": [0, 3]}, {"name": "y", "type": "int", "range": [0, 2]}]
    )
    full = run_loop(get_proposer(config(name, params, n_samples=12, target="min", **extra)))
    history = [(job, quadratic(job)) for i, job in enumerate(full[:10]) if i != 7]
    resumed = get_proposer(config(name, params, n_samples=12, target="min", **extra))
    resumed.replay(history)
    rest = run_loop(resumed)
    assert rest == [full[7]] + full[10:]  # the lost job first, then what the run would have done
    assert len(history) + len(rest) == resumed.n_samples


@pytest.mark.parametrize("name", ["hyperopt", "tpe", "cmaes", "qmc", "gp", "spearmint", "bohb"])
def test_replay_feeds_a_learning_proposer_the_past_scores(name):
    full, history = interrupted(name, stop_at=10, **BUDGETED.get(name, {}))
    resumed = minimise(name, n_samples=12)
    resumed.replay(history)
    rest = run_loop(resumed)
    assert len(history) + len(rest) == resumed.n_samples
    if name == "bohb":
        assert [j["n_iterations"] for j in rest][:3] == [j["n_iterations"] for j in full[10:13]]
    elif name in ("gp", "spearmint"):
        assert len(resumed._y) == resumed.n_samples  # the GP saw the past scores and the new ones
    else:
        trials = resumed.study.get_trials(deepcopy=False)
        assert [t.value for t in trials[:10]] == [score for _, score in history]


def test_replay_of_tpe_steers_as_the_uninterrupted_run():
    """After replaying 30 good-and-bad past jobs, TPE's next proposals sit near the best ones."""
    _, history = interrupted("tpe", stop_at=30, n_samples=30)
    resumed = minimise("tpe", n_samples=40, seed=5)
    resumed.replay(history)
    fresh = minimise("tpe", n_samples=10, seed=5)
    after = [quadratic(j) for j in run_loop(resumed)]
    cold = [quadratic(j) for j in run_loop(fresh)]
    assert statistics.median(after) < statistics.median(cold)
