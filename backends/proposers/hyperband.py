"""Hyperband (Auptimizer's ``hyperband``): successive halving across brackets, scheduled exactly
as Auptimizer 2.0 does (after Li et al. and zygmuntz/hyperband).

Keys (top level of experiment.json, Auptimizer's defaults): ``max_iter`` 81 — the largest budget
a configuration gets (e.g. epochs); ``eta`` 3 — the halving rate; ``skip_last`` 0 — 1 drops each
bracket's last rung; ``engine`` random|sequence — how each bracket's configurations are drawn;
``random_seed`` 0. ``n_samples`` is not used: the schedule decides how many jobs run.

With ``s_max = int(log(max_iter) / log(eta))`` and ``B = (s_max + 1) · max_iter``, bracket
``s = s_max … 0`` starts ``n = ceil(B / max_iter / (s + 1) · eta^s)`` configurations at budget
``r = max_iter · eta^-s``; rung ``i`` runs at budget ``r · eta^i``, and the best
``int(n · eta^-i / eta)`` of it go on to the next rung. A rung starts when every job of the one
before has ended, so ``get`` returns None in between while :attr:`finished` stays False.

Each job's config gets ``n_iterations`` (its budget; a whole number is written as an int, where
Auptimizer writes 1.0) and ``tid`` (its place in the rung, as in Auptimizer). Unlike Auptimizer, a
job that fails or is stopped counts as the worst of its rung instead of stalling the bracket, and
every bracket runs (Auptimizer stops after as many jobs as the brackets' first rungs hold).
"""

from __future__ import annotations

import dataclasses
import math
import random

from ..config import ExperimentConfig
from ..errors import ConfigError
from .base import Params, Proposer, key_choice, key_int
from .basic import RandomProposer, SequenceProposer, _tidy


def budget_value(budget: float) -> int | float:
    """A budget as the job sees it: 3 rather than 3.0000000000000004, a fraction left as is."""
    tidy = _tidy(budget)
    return int(tidy) if tidy.is_integer() else tidy


def schedule(max_iter: int, eta: int, skip_last: int = 0) -> list[list[tuple[int, float]]]:
    """Hyperband's brackets as lists of rungs ``(n_configs, budget)``, with Auptimizer's float
    arithmetic (so the counts are the ones Auptimizer runs)."""
    s_max = int(math.log(max_iter) / math.log(eta))
    total = (s_max + 1) * max_iter
    brackets = []
    for s in range(s_max, -1, -1):
        n = int(math.ceil(total / max_iter / (s + 1) * eta**s))
        r = max_iter * eta ** (-s)
        rungs, size = [], n
        for i in range(s + 1 - int(skip_last)):
            rungs.append((size, r * eta**i))
            size = int(n * eta ** (-i) / eta)
        if rungs:
            brackets.append(rungs)
    return brackets


class HyperbandProposer(Proposer):
    """Successive halving over brackets; waits between rungs for the scores it ranks."""

    name = "hyperband"

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__(config)
        self.max_iter = key_int(config, "max_iter", 81, minimum=1)
        self.eta = key_int(config, "eta", 3, minimum=2)
        self.skip_last = key_int(config, "skip_last", 0, minimum=0)
        if self.skip_last > 1:
            raise ConfigError(f"skip_last in {self.source} must be 0 or 1, got {self.skip_last}")
        self.engine = key_choice(config, "engine", "random", ("random", "sequence"))
        self.brackets = schedule(self.max_iter, self.eta, self.skip_last)
        self.n_samples = sum(size for rungs in self.brackets for size, _ in rungs)
        self._rng = random.Random(self.seed)
        self._bracket = -1
        self._rung = 0
        self._configs: list[Params] = []  # this rung's configurations, in tid order
        self._next = 0  # next tid to hand out
        self._scores: dict[int, float] = {}  # tid → loss of the jobs of this rung that ended
        self._open_bracket(0)

    def _open_bracket(self, index: int) -> None:
        self._bracket, self._rung, self._next, self._scores = index, 0, 0, {}
        if index >= len(self.brackets):
            self._configs = []
            return
        size = self.brackets[index][0][0]
        sub = dataclasses.replace(
            self.config, proposer=self.engine, n_samples=size, random_seed=self._rng.randint(0, 100)
        )
        draws = RandomProposer if self.engine == "random" else SequenceProposer
        engine: Proposer = draws(sub)
        configs: list[Params] = []
        for _ in range(size):  # a grid smaller than the bracket repeats from its start
            params = engine.get()
            if params is None:
                engine = draws(sub)
                params = engine.get()
            assert params is not None  # a fresh random or sequence proposer always has one
            configs.append(params)
        self._configs = configs

    def _propose(self) -> Params | None:
        if self._bracket >= len(self.brackets):
            return None
        if self._next == len(self._configs):
            if len(self._scores) < len(self._configs):
                return None  # waiting for this rung's scores
            self._promote()
            if self._bracket >= len(self.brackets):
                return None
        budget = self.brackets[self._bracket][self._rung][1]
        params = {**self._configs[self._next], "tid": self._next, "n_iterations": budget_value(budget)}
        self._next += 1
        return params

    def _promote(self) -> None:
        """The best of the rung go on at eta times the budget; after the last rung, next bracket."""
        rungs = self.brackets[self._bracket]
        if self._rung + 1 >= len(rungs):
            self._open_bracket(self._bracket + 1)
            return
        keep = rungs[self._rung + 1][0]
        ranked = sorted(self._scores, key=lambda tid: (self._scores[tid], tid))[:keep]
        self._configs = [self._configs[tid] for tid in ranked]
        self._rung += 1
        self._next = 0
        self._scores = {}

    def _tell(self, config: Params, score: float | None) -> None:
        tid = config.get("tid")
        if not isinstance(tid, int) or not 0 <= tid < self._next or tid in self._scores:
            return
        self._scores[tid] = math.inf if score is None else self._loss(score)
