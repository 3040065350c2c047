"""Proposer cost per trial (one get() and one update()) with 100 and 1,000 finished trials,
against random search as the floor, measured in the same run.

The finished trials are fed with ``replay`` (random configurations of a 4-parameter space scored
by a quadratic), then a few more trials are timed. Per-trial figures are the median and the worst
of those trials; the GP's worst includes its periodic re-tuning of kernel hyperparameters.

    python benchmarks/bench_proposers.py [--quick]
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aup_tui_backends.config import validate_experiment  # noqa: E402
from aup_tui_backends.proposers import get_proposer  # noqa: E402

PARAMS = [
    {"name": "x", "type": "float", "range": [-5, 5]},
    {"name": "y", "type": "float", "range": [-5, 5]},
    {"name": "k", "type": "int", "range": [1, 8]},
    {"name": "opt", "type": "choice", "range": ["sgd", "adam", "rmsprop"]},
]


def score(job: dict) -> float:
    return (job["x"] - 1) ** 2 + (job["y"] + 2) ** 2 + abs(job["k"] - 3) + (job["opt"] != "adam")


def history(n: int) -> list[tuple[dict, float]]:
    rng = random.Random(7)
    jobs = [
        {
            "x": rng.uniform(-5, 5),
            "y": rng.uniform(-5, 5),
            "k": rng.randint(1, 8),
            "opt": rng.choice(["sgd", "adam", "rmsprop"]),
        }
        for _ in range(n)
    ]
    return [(job, score(job)) for job in jobs]


def per_trial(name: str, done: int, timed: int) -> tuple[float, float]:
    """(median, worst) seconds of one get()+update() after `done` finished trials."""
    cfg = validate_experiment(
        {
            "name": "bench",
            "script": "t.sh",
            "resource": "cpu",
            "target": "min",
            "proposer": name,
            "n_samples": done + timed,
            "random_seed": 1,
            "parameter_config": PARAMS,
        }
    )
    proposer = get_proposer(cfg)
    proposer.replay(history(done))
    if name == "random":  # random ignores the past: draw the same number first, as a resumed run would
        for _ in range(done):
            proposer.get()
    samples = []
    for _ in range(timed):
        start = time.perf_counter()
        job = proposer.get()
        proposer.update(score(job), job)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), max(samples)


def main() -> None:
    quick = "--quick" in sys.argv
    timed = {100: 10 if quick else 30, 1000: 5 if quick else 15}
    names = ["random", "tpe", "hyperopt", "gp"]
    for done, n in timed.items():
        floor = per_trial("random", done, max(n, 200))[0]
        print(f"{done} finished trials ({n} timed):  random {floor * 1e6:.1f} µs/trial (floor)")
        for name in names[1:]:
            median, worst = per_trial(name, done, n)
            print(
                f"  {name:9s} median {median * 1000:7.2f} ms  worst {worst * 1000:7.1f} ms  "
                f"ratio {median / floor:,.0f}x random"
            )


if __name__ == "__main__":
    main()
