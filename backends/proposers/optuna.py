"""Proposers on Optuna's samplers: ``hyperopt`` (Auptimizer's name: TPE or random, adds ``tid``),
``tpe``, ``cmaes`` and ``qmc``, driven through Optuna's ask/tell interface.

Optuna is imported when such a proposer is built, never at package import. Each job is one
trial of an in-memory study that minimises the score (negated for ``target: max``); a job that
ends without a score is told FAIL, which the samplers skip, so a failed job never stops the
proposer. Choice parameters are categorical over their positions, so any JSON value can be a
choice; int parameters are drawn from [low, high] inclusive like random search.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

from ..config import ExperimentConfig
from ..values import is_number, json_key
from .base import History, Params, Proposer, config_key, key_choice


def distributions(parameter_config: list[dict[str, Any]]) -> dict[str, Any]:
    """Optuna distributions for ``parameter_config`` (a choice is its index into ``range``)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for p in parameter_config:
        if p["type"] == "choice":
            out[p["name"]] = CategoricalDistribution(list(range(len(p["range"]))))
        elif p["type"] == "int":
            out[p["name"]] = IntDistribution(int(p["range"][0]), int(p["range"][1]))
        else:
            out[p["name"]] = FloatDistribution(float(p["range"][0]), float(p["range"][1]))
    return out


def to_job(parameter_config: list[dict[str, Any]], params: dict[str, Any]) -> Params:
    """Optuna's params → the job's JSON values (choices looked up, ints as int, floats as float)."""
    out: dict[str, Any] = {}
    for p in parameter_config:
        value = params[p["name"]]
        if p["type"] == "choice":
            out[p["name"]] = p["range"][int(value)]
        elif p["type"] == "int":
            out[p["name"]] = int(value)
        else:
            out[p["name"]] = float(value)
    return out


def to_optuna(parameter_config: list[dict[str, Any]], config: Params) -> dict[str, Any] | None:
    """A job's config → Optuna's params (a choice is its index); None when it is outside the space
    (an edited file, a changed experiment.json): a choice must be one of the same JSON values, a
    number a finite one within the range. The proposers' replay and the analysis both use it."""
    out: dict[str, Any] = {}
    for p in parameter_config:
        if p["name"] not in config:
            return None
        value = config[p["name"]]
        if p["type"] == "choice":
            keys = [json_key(c) for c in p["range"]]
            if json_key(value) not in keys:
                return None
            out[p["name"]] = keys.index(json_key(value))
        else:
            low, high = p["range"]
            if not is_number(value) or not low <= value <= high:
                return None
            out[p["name"]] = int(value) if p["type"] == "int" else float(value)
    return out


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO; a job list and progress line already say it all."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


class OptunaProposer(Proposer):
    """One Optuna study; ``get`` asks a trial, ``update``/``failed`` tell it."""

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__(config)
        import optuna

        quiet_optuna()
        self._params = config.parameter_config
        self._dists = distributions(self._params)
        self.study = optuna.create_study(direction="minimize", sampler=self._sampler())
        self._open: dict[str, list[Any]] = {}  # config key → trials asked, not yet told

    def _sampler(self) -> Any:
        raise NotImplementedError

    def _propose(self) -> Params:
        trial = self.study.ask(self._dists)
        params = to_job(self._params, trial.params)
        self._open.setdefault(config_key(params), []).append(trial)
        if "tid" in self.adds:
            params["tid"] = trial.number
        return params

    def _tell(self, config: Params, score: float | None) -> None:
        import optuna

        trial = self._take(config)
        if trial is None:
            return
        if score is None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, self._loss(score))

    def _take(self, config: Params) -> Any:
        trials = self._open.get(config_key(config))
        if not trials:
            return None
        if "tid" in config and len(trials) > 1:
            for trial in trials:
                if trial.number == config["tid"]:
                    trials.remove(trial)
                    return trial
        return trials.pop(0)

    def replay(self, history: History) -> None:
        """Past jobs become finished trials of the study (their own parameters and scores), so the
        sampler's model is the one the interrupted run had built."""
        import optuna

        with self._lock:
            for config, score in history:
                self._given += 1
                params = to_optuna(self._params, config)
                if params is None:
                    continue
                value = None if score is None else float(score)
                if value is None or not math.isfinite(value):
                    trial = optuna.trial.create_trial(
                        params=params, distributions=self._dists, state=optuna.trial.TrialState.FAIL
                    )
                else:
                    trial = optuna.trial.create_trial(
                        params=params, distributions=self._dists, value=self._loss(value)
                    )
                self.study.add_trial(trial)

    def enqueue(self, configs: Iterable[Params]) -> None:
        """Each configuration becomes the study's next trial (Optuna's ``enqueue_trial``)."""
        with self._lock:
            for config in configs:
                params = to_optuna(self._params, config)
                if params is not None:
                    self.study.enqueue_trial(params, skip_if_exists=False)


def _hyperopt_gamma(n: int) -> int:
    """hyperopt's split: the best ceil(0.25·√n) trials are the 'good' ones."""
    return min(math.ceil(0.25 * math.sqrt(n)), 25)


class HyperoptProposer(OptunaProposer):
    """Auptimizer's ``hyperopt``: ``engine`` tpe (default) or random, ``random_seed`` (default 0);
    adds ``tid``, the trial number. TPE keeps hyperopt's own settings: 20 random start-up trials,
    24 candidates, the best ceil(0.25·√n) trials modelled as good."""

    name = "hyperopt"

    def _sampler(self) -> Any:
        import optuna

        engine = key_choice(self.config, "engine", "tpe", ("tpe", "random"))
        if engine == "random":
            return optuna.samplers.RandomSampler(seed=self.seed)
        with warnings.catch_warnings():  # gamma is deprecated in Optuna 4.9, kept until 6
            warnings.simplefilter("ignore", FutureWarning)
            return optuna.samplers.TPESampler(
                seed=self.seed, n_startup_trials=20, n_ei_candidates=24, gamma=_hyperopt_gamma
            )


class TPEProposer(OptunaProposer):
    """Optuna's TPE with its own defaults (10 start-up trials, multivariate off)."""

    name = "tpe"

    def _sampler(self) -> Any:
        import optuna

        return optuna.samplers.TPESampler(seed=self.seed)


class CMAESProposer(OptunaProposer):
    """CMA-ES (Optuna's CmaEsSampler on the ``cmaes`` package); choices are drawn at random."""

    name = "cmaes"

    def _sampler(self) -> Any:
        import optuna

        return optuna.samplers.CmaEsSampler(seed=self.seed, warn_independent_sampling=False)


class QMCProposer(OptunaProposer):
    """Quasi-random (scrambled Sobol) search: covers the space more evenly than random."""

    name = "qmc"

    def _sampler(self) -> Any:
        import optuna

        with warnings.catch_warnings():  # "experimental" since Optuna 3.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(
                seed=self.seed,
                scramble=True,
                warn_independent_sampling=False,
                warn_asynchronous_seeding=False,
            )
