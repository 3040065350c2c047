"""Random and grid search (Auptimizer's ``random`` and ``sequence``).

Both read ``parameter_config`` entries ``{name, type: float|int|choice, range, interval?, n?}``
as validated by :mod:`aup_tui_backends.config`, and hand out plain JSON values (ints for int parameters,
floats for float ones) because the dict is written to the job's config file as is.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

from ..config import ExperimentConfig
from .base import Params, Proposer


class RandomProposer(Proposer):
    """Uniform random search: floats in [low, high], ints in [low, high] inclusive, any choice.

    Without ``random_seed`` the seed is 0, as in Auptimizer, so a rerun proposes the same jobs.
    """

    name = "random"

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__(config)
        self._rng = random.Random(0 if config.random_seed is None else config.random_seed)

    def _propose(self) -> Params:
        return {p["name"]: draw(p, self._rng) for p in self.config.parameter_config}


def draw(param: dict[str, Any], rng: random.Random) -> Any:
    """One uniform value of a parameter: floats in [low, high], ints in [low, high] inclusive."""
    if param["type"] == "choice":
        return rng.choice(param["range"])
    low, high = param["range"]
    if param["type"] == "int":
        return rng.randint(int(low), int(high))
    return rng.uniform(float(low), float(high))


class SequenceProposer(Proposer):
    """Grid search over every combination, in Auptimizer's order: the first parameter changes
    fastest. ``n_samples`` (when above 0) caps how many grid points run."""

    name = "sequence"

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__(config)
        axes = [_grid_axis(p) for p in config.parameter_config]
        size = math.prod(len(axis) for axis in axes)
        self.n_samples = min(config.n_samples, size) if config.n_samples > 0 else size
        names = [p["name"] for p in config.parameter_config]
        self._grid = (dict(zip(names, reversed(point))) for point in itertools.product(*reversed(axes)))

    def _propose(self) -> Params:
        return next(self._grid)


def _grid_axis(param: dict[str, Any]) -> list[Any]:
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
    if "n" in param and "interval" not in param:
        last = param["n"] - 1
        return [_tidy(low + (high - low) * i / last) for i in range(param["n"])]
    width = float(param.get("interval", 1.0))
    count = math.floor((high - low) / width + 1e-9) + 1
    return [_tidy(low + i * width) for i in range(count)]


def _tidy(value: float) -> float:
    """Drop float noise (0.30000000000000004 → 0.3) so job configs read as the person wrote them."""
    return float(f"{value:.12g}")
