"""Which parameters matter: parameter importance over an experiment's finished jobs.

The finished jobs (a config and a score each) become the trials of an in-memory Optuna study,
and Optuna's PED-ANOVA evaluator ranks the parameters. PED-ANOVA, not fANOVA: fANOVA fits a
random forest (scikit-learn) and took ~30 s at 1,000 jobs on a 2-core machine, PED-ANOVA takes
~0.5 s at 10,000 and needs nothing beyond Optuna. Above `MAX_JOBS` finished jobs a fixed sample
of them is used (Optuna checks and copies each trial: 5 s for 10,000). The space is the
experiment's ``parameter_config`` when known (the distributions the Optuna proposers build), otherwise it is
read off the values: numbers as a range, anything else as categories.

Optuna is imported inside the functions, never at import time (``aup-tui --help`` must not pay
for it). No Textual: the analysis screen runs `parameter_importance` in a thread worker.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .values import is_number, json_key

#: fewer finished jobs than this and importance is noise: the screen says so instead
MIN_JOBS = 5
#: more than this and a fixed sample of them is used: Optuna copies every trial it is given
#: (~0.35 ms each), and PED-ANOVA's top-10 % against the rest is as clear from 2,000 jobs
MAX_JOBS = 2000

METHOD = "PED-ANOVA"


@dataclass(frozen=True)
class Importance:
    """Each parameter's share of importance (sorted, largest first), or why there is none."""

    values: dict[str, float] = field(default_factory=dict)
    method: str = METHOD
    reason: str | None = None  # set when `values` is empty: what the screen shows instead
    jobs: int = 0  # the finished jobs it was computed from
    sampled_from: int | None = None  # set when those are a sample: of how many


def scored(jobs: Sequence[tuple[dict[str, Any], float | None]]) -> list[tuple[dict[str, Any], float]]:
    """The (config, score) pairs with a finite score (a failed or unscored job tells nothing)."""
    return [
        (config, float(score))
        for config, score in jobs
        if score is not None and isinstance(score, (int, float)) and math.isfinite(score)
    ]


def inferred_config(configs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A ``parameter_config`` read off the values: all-number parameters as float or int ranges,
    others as choices over the values seen; a parameter with one value only is left out."""
    names: dict[str, None] = {}
    for config in configs:
        names.update(dict.fromkeys(config))
    out: list[dict[str, Any]] = []
    for name in names:
        values = [c[name] for c in configs if name in c]
        if len(values) < len(configs):
            continue  # not in every job: not a parameter of this space
        if all(is_number(v) for v in values):
            low, high = min(values), max(values)
            if low == high:
                continue
            kind = "int" if all(isinstance(v, int) for v in values) else "float"
            out.append({"name": name, "type": kind, "range": [low, high]})
        else:
            choices = list({json_key(v): v for v in values}.values())
            if len(choices) > 1:
                out.append({"name": name, "type": "choice", "range": choices})
    return out


def _varies(p: dict[str, Any]) -> bool:
    """More than one value to choose from (Optuna rejects an empty range)."""
    if p["type"] == "choice":
        return len(p["range"]) > 1
    return bool(p["range"][0] < p["range"][1])


def parameter_importance(
    jobs: Sequence[tuple[dict[str, Any], float | None]],
    maximize: bool,
    parameter_config: list[dict[str, Any]] | None = None,
) -> Importance:
    """Importance of each parameter for the score over `jobs` ((config, score) pairs; unscored
    ones are skipped). An `Importance` with a `reason` when it can't be computed."""
    done = scored(jobs)
    if len(done) < MIN_JOBS:
        return Importance(
            reason=f"{len(done)} job{'' if len(done) == 1 else 's'} finished with a score: "
            f"importance needs at least {MIN_JOBS}",
            jobs=len(done),
        )
    space = [p for p in parameter_config or inferred_config([c for c, _ in done]) if _varies(p)]
    if not space:
        return Importance(reason="no parameter takes more than one value", jobs=len(done))
    try:
        import optuna
        from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances
    except ImportError:
        return Importance(reason="Optuna is not installed (pip install optuna)", jobs=len(done))
    from .proposers.optuna import distributions, quiet_optuna, to_optuna

    quiet_optuna()
    dists = distributions(space)
    inside = [
        (params, score) for params, score in ((to_optuna(space, c), s) for c, s in done) if params is not None
    ]
    if len(inside) < MIN_JOBS:
        return Importance(
            reason=f"only {len(inside)} finished jobs lie inside the parameter space: "
            f"importance needs at least {MIN_JOBS}",
            jobs=len(inside),
        )
    sampled_from = None
    if len(inside) > MAX_JOBS:
        sampled_from, inside = len(inside), random.Random(0).sample(inside, MAX_JOBS)
    trials = [optuna.trial.create_trial(params=p, distributions=dists, value=v) for p, v in inside]
    study = optuna.create_study(direction="maximize" if maximize else "minimize")
    study.add_trials(trials)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PED-ANOVA is "experimental" in Optuna: a warning each call
        values = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), normalize=True)
    ranked = dict(sorted(((k, float(v)) for k, v in values.items()), key=lambda kv: -kv[1]))
    for p in space:  # a parameter PED-ANOVA left out (one value among the top jobs) counts as 0
        ranked.setdefault(p["name"], 0.0)
    return Importance(values=ranked, jobs=len(trials), sampled_from=sampled_from)
