"""Proposers: where each job's parameters come from (Auptimizer's ``random`` and ``sequence``).

Both read ``parameter_config`` entries ``{name, type: float|int|choice, range, interval?, n?}``
as validated by :mod:`backends.config`, and hand out plain JSON values (ints for int parameters,
floats for float ones) because the dict is written to the job's config file as is.
"""
from __future__ import annotations

import itertools
import math
import random
import threading
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import ExperimentConfig


class Proposer:
    """Hands out parameter dicts until ``n_samples`` of them are given.

    ``get`` counts under a lock because job threads (retries) and the experiment loop may share
    one proposer.
    """

    name: ClassVar[str]
    needs_n_samples: ClassVar[bool] = True

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        self.n_samples: int = config.n_samples
        self._given = 0
        self._lock = threading.Lock()

    def get(self) -> dict | None:
        """The next parameter dict, or None once ``n_samples`` were given."""
        with self._lock:
            if self._given >= self.n_samples:
                return None
            self._given += 1
            return self._propose()

    def update(self, score: float | None, config: dict) -> None:
        """Feedback from a finished job; random and grid search do not learn from it."""

    def failed(self, config: dict) -> None:
        """A job with ``config`` failed; random and grid search do not propose it again."""

    @property
    def finished(self) -> bool:
        with self._lock:
            return self._given >= self.n_samples

    def _propose(self) -> dict:
        raise NotImplementedError


class RandomProposer(Proposer):
    """Uniform random search: floats in [low, high], ints in [low, high] inclusive, any choice.

    Without ``random_seed`` the seed is 0, as in Auptimizer, so a rerun proposes the same jobs.
    """

    name = "random"

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__(config)
        self._rng = random.Random(0 if config.random_seed is None else config.random_seed)

    def _propose(self) -> dict:
        return {p["name"]: self._draw(p) for p in self.config.parameter_config}

    def _draw(self, param: dict) -> Any:
        if param["type"] == "choice":
            return self._rng.choice(param["range"])
        low, high = param["range"]
        if param["type"] == "int":
            return self._rng.randint(int(low), int(high))
        return self._rng.uniform(float(low), float(high))


class SequenceProposer(Proposer):
    """Grid search over every combination, in Auptimizer's order: the first parameter changes
    fastest. ``n_samples`` (when above 0) caps how many grid points run."""

    name = "sequence"
    needs_n_samples = False

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__(config)
        axes = [_grid_axis(p) for p in config.parameter_config]
        size = math.prod(len(axis) for axis in axes)
        self.n_samples = min(config.n_samples, size) if config.n_samples > 0 else size
        names = [p["name"] for p in config.parameter_config]
        self._grid = (dict(zip(names, reversed(point)))
                      for point in itertools.product(*reversed(axes)))

    def _propose(self) -> dict:
        return next(self._grid)


def _grid_axis(param: dict) -> list:
    """The values a parameter takes in the grid.

    As in Auptimizer: ``interval`` wins over ``n``; without either the step is 1; ``n`` points
    include both ends for floats, while for ints ``n`` sets the step ``(high - low) // (n - 1)``.
    """
    if param["type"] == "choice":
        return list(param["range"])
    low, high = param["range"]
    if param["type"] == "int":
        low, high = int(low), int(high)
        if "interval" in param:
            step = int(param["interval"])
        elif "n" in param:
            step = max(1, (high - low) // (param["n"] - 1))
        else:
            step = 1
        return list(range(low, high + 1, step))
    low, high = float(low), float(high)
    if "interval" in param:
        step = float(param["interval"])
    elif "n" in param:
        last = param["n"] - 1
        return [_tidy(low + (high - low) * i / last) for i in range(param["n"])]
    else:
        step = 1.0
    count = math.floor((high - low) / step + 1e-9) + 1
    return [_tidy(low + i * step) for i in range(count)]


def _tidy(value: float) -> float:
    """Drop float noise (0.30000000000000004 → 0.3) so job configs read as the person wrote them."""
    return float(f"{value:.12g}")


PROPOSERS: dict[str, type[Proposer]] = {
    cls.name: cls for cls in (RandomProposer, SequenceProposer)
}


def proposer_class(name: Any, source: str = "experiment.json") -> type[Proposer]:
    """The proposer class called ``name``; a ConfigError naming ``source`` when there is none."""
    if isinstance(name, str) and name in PROPOSERS:
        return PROPOSERS[name]
    raise ConfigError(f"unknown proposer '{name}' in {source} — available: {', '.join(PROPOSERS)}")


def get_proposer(config: ExperimentConfig) -> Proposer:
    """A fresh proposer for the experiment."""
    return proposer_class(config.proposer, config.path or "experiment.json")(config)
