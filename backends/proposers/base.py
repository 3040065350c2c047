"""The proposer protocol the experiment loop drives, and the key checks every proposer shares.

A proposer hands out parameter dicts (``get``), hears how each job ended (``update`` with its
score, ``failed`` when it has none) and can be fed the finished jobs of an earlier run before it
proposes again (``replay``), so a resumed experiment continues where it stopped.

``get`` returning None means one of two things, told apart by :attr:`Proposer.finished`: the
budget is spent (``finished`` True), or the proposer waits for running jobs' scores before it can
propose more (hyperband and bohb between rungs; ``finished`` False). The loop asks again when a
job ends.
"""

from __future__ import annotations

import functools
import json
import math
import threading
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from ..config import ExperimentConfig, validate_experiment
from ..errors import ConfigError
from ..proposer_catalog import PROPOSER_SPECS
from ..values import is_number

#: a job's parameters (and the keys its proposer adds), JSON values as its config file holds them
Params = dict[str, Any]
#: finished jobs of an earlier run: (parameters, score or None)
History = Iterable[tuple[Params, "float | None"]]


def as_experiment_config(config: ExperimentConfig | dict[str, Any]) -> ExperimentConfig:
    """`config`, or the experiment's dict (as Auptimizer passes it) checked as the file is."""
    if isinstance(config, dict):
        return validate_experiment(config, source="the experiment config")
    return config


class Proposer:
    """Hands out parameter dicts until ``n_samples`` of them are given.

    ``get`` counts under a lock because job threads (retries) and the experiment loop may share
    one proposer. Subclasses implement ``_propose`` (None = waiting) and, when they learn, ``_tell``.
    """

    #: its entry in :data:`~aup_tui_backends.proposer_catalog.PROPOSER_SPECS`, which holds its facts
    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Each proposer also takes the experiment's dict, as Auptimizer's do (checked as a file is)."""
        super().__init_subclass__(**kwargs)
        init: Callable[..., None] | None = cls.__dict__.get("__init__")
        if init is not None:
            checked = init  # narrowed to not-None for the closure

            @functools.wraps(checked)
            def __init__(
                self: Proposer, config: ExperimentConfig | dict[str, Any], *args: Any, **kw: Any
            ) -> None:
                checked(self, as_experiment_config(config), *args, **kw)

            setattr(cls, "__init__", __init__)  # noqa: B010 — mypy refuses assigning a method

    def __init__(self, config: ExperimentConfig | dict[str, Any]) -> None:
        config = as_experiment_config(config)
        self.config = config
        self.n_samples: int = config.n_samples
        self.source = config.path or "experiment.json"
        self.maximize = config.target == "max"
        self.seed = 0 if config.random_seed is None else config.random_seed
        self._given = 0
        self._requeue: list[Params] = []  # proposed before a resume but never finished
        self._past: dict[str, list[float | None]] = {}  # replayed jobs not yet met again
        self._lock = threading.RLock()

    @property
    def adds(self) -> tuple[str, ...]:
        """Keys this proposer writes into each job's config next to the parameters (none for a
        proposer of your own that the catalogue does not list)."""
        spec = PROPOSER_SPECS.get(self.name)
        return spec.adds if spec else ()

    def get(self) -> Params | None:
        """The next parameter dict; None when the budget is spent or while waiting for scores."""
        with self._lock:
            while True:
                if self._requeue:
                    return dict(self._requeue.pop(0))
                if self._given >= self.n_samples:
                    return None
                params = self._propose()
                if params is None:
                    return None
                self._given += 1
                past = self._past.get(config_key(params))
                if not past:
                    return params
                self._tell(params, _finite(past.pop(0)))  # ran before the resume: its score is known

    def update(self, score: float | None, config: Params) -> None:
        """Feedback from a finished job (``config`` as ``get`` gave it; ``score`` its final result)."""
        with self._lock:
            self._tell(config, _finite(score))

    def failed(self, config: Params) -> None:
        """A job with ``config`` ended without a score (failed or stopped): never an exception,
        whatever the proposer; model-based ones count it as a bad trial."""
        with self._lock:
            self._tell(config, None)

    def replay(self, history: History) -> None:
        """Feed the finished jobs of an earlier run: ``(config, score)`` pairs, score None for a
        job without one. Each counts against ``n_samples``.

        This default suits proposers whose sequence is seeded and depends only on the scores
        (random, sequence, hyperband): the proposer runs its own sequence again, and each proposal
        that matches a past job by its parameters is told that job's score instead of being handed
        out. So the resumed run goes on exactly as the interrupted one would have, and a job that
        was running when it stopped is proposed again in its place.
        """
        with self._lock:
            for config, score in history:
                self._past.setdefault(config_key(config), []).append(score)

    def enqueue(self, configs: Iterable[Params]) -> None:
        """Propose ``configs`` (an earlier run's jobs that never ended) before any new
        configuration, as part of the remaining budget, so that they run again.

        This default does nothing: after ``replay`` a seeded proposer (random, sequence, hyperband)
        runs its own sequence again, which proposes them anyway, in their place. Learning
        proposers queue them (Optuna's ``enqueue_trial``; the GP's own queue)."""

    @property
    def finished(self) -> bool:
        """True once every job was given out: a None from ``get`` is then final."""
        with self._lock:
            return self._given >= self.n_samples and not self._requeue

    def _propose(self) -> Params | None:
        raise NotImplementedError

    def _tell(self, config: Params, score: float | None) -> None:
        """Learn from one ended job; random and grid search do not."""

    def _loss(self, score: float) -> float:
        """The score as a value to minimise."""
        return -score if self.maximize else score


def config_key(config: Params) -> str:
    """A job's parameters and budget as a comparable string (the ids job_id and tid left out:
    they number jobs, they do not describe them)."""
    return json.dumps(
        {k: v for k, v in config.items() if k not in ("job_id", "tid")}, sort_keys=True, default=str
    )


def _finite(score: Any) -> float | None:
    try:
        value = float(score)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# -- key checks shared by the proposers: experiment.json's top-level keys, one clear error each --


def key_int(config: ExperimentConfig, key: str, default: int, minimum: int) -> int:
    value = config.raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"{key} in {config.path or 'experiment.json'} must be a whole number of at "
            f"least {minimum} (default {default}), got {json.dumps(value, default=str)}"
        )
    return value


def key_number(
    config: ExperimentConfig,
    key: str,
    default: float | None,
    low: float,
    high: float = math.inf,
    low_open: bool = True,
) -> float:
    value: Any = config.raw.get(key, default)
    if not is_number(value) or not (value > low if low_open else value >= low) or value > high:
        bound = f"above {low:g}" if low_open else f"at least {low:g}"
        bound += f" and at most {high:g}" if math.isfinite(high) else ""
        hint = f" (default {default:g})" if default is not None else ""
        raise ConfigError(
            f"{key} in {config.path or 'experiment.json'} must be a number {bound}{hint}, "
            f"got {json.dumps(value, default=str)}"
        )
    return float(value)


def key_choice(config: ExperimentConfig, key: str, default: str, options: tuple[str, ...]) -> str:
    value = config.raw.get(key, default)
    if not isinstance(value, str) or value not in options:
        raise ConfigError(
            f"{key} {json.dumps(value, default=str)} in {config.path or 'experiment.json'} "
            f"is not supported by the {config.proposer} proposer — use {' or '.join(options)}"
        )
    return value
