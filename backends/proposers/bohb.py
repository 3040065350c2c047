"""BOHB (Auptimizer's ``bohb``): Hyperband's successive halving with configurations drawn from a
model of the results so far, scheduled as HpBandSter (and so Auptimizer 2.0) does.

Keys (top level of experiment.json, Auptimizer's defaults): ``min_budget`` 0.01, ``max_budget``
1, ``eta`` 3, ``n_iterations`` 4 (successive-halving iterations), and the model's keys
``min_points_in_model`` (default: number of parameters + 1), ``top_n_percent`` 15,
``num_samples`` 64, ``random_fraction`` 1/3, ``bandwidth_factor`` 3, ``min_bandwidth`` 0.001;
``random_seed`` 0. ``n_samples`` is not used: the iterations decide how many jobs run.

Budgets are ``max_budget · eta^-k`` for the ``-int(log(min_budget/max_budget)/log(eta)) + 1``
rungs; iteration ``i`` uses the last ``s + 1`` of them with ``s = rungs - 1 - i mod rungs`` and
``n0 = int(floor(rungs/(s+1)) · eta^s)`` configurations, keeping the best ``int(n0 · eta^-k)``
(at least 1) at rung ``k``. As in HpBandSter, a new iteration opens whenever the open ones wait
for scores. Each job's config gets ``n_iterations`` (its budget) and ``tid`` (a running count).

The model is Optuna's multivariate TPE — the Parzen-estimator pair BOHB itself uses — one per
budget, built once a budget has ``min_points_in_model + 2`` results; configurations come from the
model of the largest such budget, except a ``random_fraction`` of them drawn uniformly.
``top_n_percent`` sets the share of results modelled as good and ``num_samples`` the candidates
compared by expected improvement; Optuna chooses the kernels' bandwidths itself, so
``bandwidth_factor`` and ``min_bandwidth`` are checked but have no effect. Unlike Auptimizer (which
raises), a failed or stopped job counts as the worst of its rung.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import ExperimentConfig
from .base import History, Params, Proposer, _finite, config_key, key_int, key_number
from .basic import draw
from .hyperband import budget_value


@dataclass
class _Iteration:
    """One successive-halving iteration: ``sizes[k]`` configurations at ``budgets[k]``."""

    sizes: list[int]
    budgets: list[float]
    stage: int = 0
    configs: dict[int, Params] = field(default_factory=dict)  # cid → params
    queued: list[int] = field(default_factory=list)
    running: set[int] = field(default_factory=set)
    losses: dict[int, float] = field(default_factory=dict)  # this stage's results
    done: bool = False

    def next_run(self, sample: Callable[[float], Params]) -> tuple[int, Params, float, bool] | None:
        """(cid, params, budget, freshly sampled) of the next job, or None while it waits."""
        if self.done:
            return None
        if self.queued:
            cid = self.queued.pop(0)
        elif self.stage == 0 and len(self.configs) < self.sizes[0]:
            cid = len(self.configs)
            self.configs[cid] = sample(self.budgets[0])
        else:
            return None
        self.running.add(cid)
        return cid, self.configs[cid], self.budgets[self.stage], self.stage == 0

    def register(self, cid: int, loss: float) -> None:
        self.running.discard(cid)
        self.losses[cid] = loss
        if self.running or self.queued or len(self.losses) < self.sizes[self.stage]:
            return
        if self.stage + 1 == len(self.sizes):
            self.done = True
            return
        keep = self.sizes[self.stage + 1]
        self.queued = sorted(self.losses, key=lambda c: (self.losses[c], c))[:keep]
        self.stage += 1
        self.losses = {}


class BOHBProposer(Proposer):
    """Model-based successive halving; waits between rungs, opening new iterations meanwhile."""

    name = "bohb"

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__(config)
        from .optuna import distributions, quiet_optuna

        quiet_optuna()
        self.max_budget = key_number(config, "max_budget", 1, low=0)
        self.min_budget = key_number(config, "min_budget", 0.01, low=0, high=self.max_budget)
        self.eta = key_number(config, "eta", 3, low=1)
        self.n_iterations = key_int(config, "n_iterations", 4, minimum=1)
        dims = len(config.parameter_config)
        raw_min = config.raw.get("min_points_in_model")
        self.min_points = dims + 1 if not raw_min else key_int(config, "min_points_in_model", dims + 1, 1)
        self.top_n_percent = key_number(config, "top_n_percent", 15, low=0, high=100)
        self.num_samples = key_int(config, "num_samples", 64, minimum=1)
        self.random_fraction = key_number(config, "random_fraction", 1 / 3, low=0, high=1, low_open=False)
        key_number(config, "bandwidth_factor", 3, low=0)
        key_number(config, "min_bandwidth", 0.001, low=0, low_open=False)
        self.max_sh_iter = -int(math.log(self.min_budget / self.max_budget) / math.log(self.eta)) + 1
        self.budgets = [
            self.max_budget * self.eta ** -(self.max_sh_iter - 1 - k) for k in range(self.max_sh_iter)
        ]
        self.n_samples = sum(sum(self._sizes(i)) for i in range(self.n_iterations))
        self._dists = distributions(config.parameter_config)
        self._rng = random.Random(self.seed)
        self._iterations: list[_Iteration] = []
        self._running: dict[int, tuple[_Iteration, int, float]] = {}  # tid → (iteration, cid, budget)
        self._tid = 0
        self._models: dict[float, Any] = {}  # budget → Optuna study holding that budget's results

    def _sizes(self, iteration: int) -> list[int]:
        s = self.max_sh_iter - 1 - (iteration % self.max_sh_iter)
        n0 = int(math.floor(self.max_sh_iter / (s + 1)) * self.eta**s)
        return [max(int(n0 * self.eta ** (-i)), 1) for i in range(s + 1)]

    def _propose(self) -> Params | None:
        while True:
            for it in self._iterations:
                run = it.next_run(self._sample)
                if run is not None:
                    cid, params, budget, _ = run
                    tid, self._tid = self._tid, self._tid + 1
                    self._running[tid] = (it, cid, budget)
                    return {**params, "tid": tid, "n_iterations": budget_value(budget)}
            if len(self._iterations) == self.n_iterations:
                return None  # waiting for scores (or done)
            i = len(self._iterations)
            s = self.max_sh_iter - 1 - (i % self.max_sh_iter)
            self._iterations.append(_Iteration(self._sizes(i), self.budgets[-s - 1 :]))

    def _sample(self, budget: float) -> Params:
        import optuna

        from .optuna import to_job

        ready = [
            b
            for b, study in self._models.items()
            if len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
            >= self.min_points + 2
        ]
        if not ready or self._rng.random() < self.random_fraction:
            return {p["name"]: draw(p, self._rng) for p in self.config.parameter_config}
        study = self._models[max(ready)]
        trial = study.ask(self._dists)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # a draw, not a result
        return to_job(self.config.parameter_config, trial.params)

    def _model(self, budget: float) -> Any:
        import optuna

        if budget not in self._models:
            top = self.top_n_percent
            with warnings.catch_warnings():  # multivariate is "experimental", gamma deprecated (Optuna 4.9)
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = optuna.samplers.TPESampler(
                    seed=self._rng.randint(0, 2**31),
                    multivariate=True,
                    n_startup_trials=0,
                    n_ei_candidates=self.num_samples,
                    gamma=lambda n: max(1, math.ceil(n * top / 100)),
                )
            self._models[budget] = optuna.create_study(direction="minimize", sampler=sampler)
        return self._models[budget]

    def _tell(self, config: Params, score: float | None) -> None:
        import optuna

        from .optuna import to_optuna

        tid = config.get("tid")
        entry = self._running.pop(tid, None) if isinstance(tid, int) else None
        if entry is None:
            return
        it, cid, budget = entry
        loss = math.inf if score is None else self._loss(score)
        it.register(cid, loss)
        params = to_optuna(self.config.parameter_config, it.configs[cid])
        if score is not None and params is not None:
            self._model(budget).add_trial(
                optuna.trial.create_trial(params=params, distributions=self._dists, value=loss)
            )

    def replay(self, history: History) -> None:
        """Past jobs fill the schedule in proposal order: a past job takes the slot of the same
        configuration, or a freshly drawn slot at its budget (the model would have drawn it from
        results that arrived in another order); slots no past job fills are proposed again."""
        from .optuna import to_optuna

        items = list(history)
        with self._lock:
            skipped: list[Params] = []
            index = 0
            while index < len(items):
                params = self.get()
                if params is None:
                    break
                past, score = items[index]
                it, cid, budget = self._running[params["tid"]]
                fresh = it.stage == 0 and cid not in it.losses
                same = config_key(params) == config_key(past)
                fits = (
                    fresh
                    and past.get("n_iterations") == params["n_iterations"]
                    and to_optuna(self.config.parameter_config, past) is not None
                )
                if same or fits:
                    if not same:
                        it.configs[cid] = {p["name"]: past[p["name"]] for p in self.config.parameter_config}
                    self._tell(params, _finite(score))
                    index += 1
                else:
                    skipped.append(params)
            self._requeue = skipped + self._requeue
