"""Proposers: the parameters each job gets, as a person running random or grid search expects."""
import json

import pytest

from backends.config import validate_experiment
from backends.errors import ConfigError
from backends.proposers import PROPOSERS, RandomProposer, SequenceProposer, get_proposer

PARAMS = [
    {"name": "lr", "type": "float", "range": [0.001, 0.1]},
    {"name": "layers", "type": "int", "range": [1, 4]},
    {"name": "opt", "type": "choice", "range": ["sgd", "adam"]},
]


def config(proposer="random", params=PARAMS, **extra):
    data = {"name": "t", "script": "t.py", "resource": "cpu", "target": "max",
            "proposer": proposer, "parameter_config": params, **extra}
    return validate_experiment(data)


def drain(proposer):
    out = []
    while (params := proposer.get()) is not None:
        out.append(params)
    return out


def test_registry_lists_auptimizers_proposers_and_ours():
    assert list(PROPOSERS) == ["random", "sequence", "spearmint", "hyperband", "hyperopt", "bohb",
                               "tpe", "gp", "cmaes", "qmc"]
    assert PROPOSERS["random"] is RandomProposer and PROPOSERS["sequence"] is SequenceProposer


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
        {"a": 1, "b": "x"}, {"a": 2, "b": "x"}, {"a": 3, "b": "x"},
        {"a": 1, "b": "y"}, {"a": 2, "b": "y"}, {"a": 3, "b": "y"},
    ]
    assert proposer.finished


@pytest.mark.parametrize("param, values", [
    ({"type": "float", "range": [0, 1], "n": 5}, [0.0, 0.25, 0.5, 0.75, 1.0]),
    ({"type": "float", "range": [0, 0.3], "interval": 0.1}, [0.0, 0.1, 0.2, 0.3]),
    ({"type": "float", "range": [0, 2]}, [0.0, 1.0, 2.0]),  # Auptimizer's default interval is 1
    ({"type": "int", "range": [0, 10], "interval": 5}, [0, 5, 10]),
    ({"type": "int", "range": [1, 10], "n": 4}, [1, 4, 7, 10]),
    ({"type": "int", "range": [2, 4]}, [2, 3, 4]),
    ({"type": "float", "range": [0, 1], "n": 3, "interval": 0.5}, [0.0, 0.5, 1.0]),  # interval wins
])
def test_sequence_grid_values(param, values):
    got = [job["p"] for job in drain(get_proposer(config("sequence", [{"name": "p", **param}])))]
    assert got == values
    assert all(type(v) is type(values[0]) for v in got)


def test_sequence_stops_at_n_samples_when_smaller_than_the_grid():
    proposer = get_proposer(config("sequence", [{"name": "k", "type": "int", "range": [1, 10]}],
                                   n_samples=3))
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
    assert str(info.value) == ("unknown proposer 'foo' in experiment.json — available: random, sequence, "
                                "spearmint, hyperband, hyperopt, bohb, tpe, gp, cmaes, qmc")
