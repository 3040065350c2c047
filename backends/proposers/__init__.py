"""Proposers: where each job's parameters come from — Auptimizer 2.0's random, sequence, hyperopt,
spearmint, hyperband and bohb (eas is refused: it needs TensorFlow), plus tpe, gp, cmaes and qmc.

One module a family: :mod:`.basic` (random, sequence), :mod:`.optuna` (hyperopt, tpe, cmaes, qmc
on Optuna's samplers), :mod:`.gp` (spearmint, gp: a Gaussian process with expected improvement
over a candidate set, on scikit-learn), :mod:`.hyperband`, :mod:`.bohb`. Heavy libraries are
imported when a proposer is built, never by importing this package, so ``aup-tui --help`` and a
random search do not pay for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .base import Proposer, as_experiment_config, config_key, installed
from .basic import RandomProposer, SequenceProposer
from .bohb import BOHBProposer
from .gp import GPProposer, SpearmintProposer
from .hyperband import HyperbandProposer
from .optuna import CMAESProposer, HyperoptProposer, QMCProposer, TPEProposer

if TYPE_CHECKING:
    from ..config import ExperimentConfig

__all__ = [
    "PROPOSERS",
    "Proposer",
    "RandomProposer",
    "SequenceProposer",
    "HyperoptProposer",
    "SpearmintProposer",
    "HyperbandProposer",
    "BOHBProposer",
    "TPEProposer",
    "GPProposer",
    "CMAESProposer",
    "QMCProposer",
    "added_keys",
    "config_key",
    "get_proposer",
    "proposer_class",
]

PROPOSERS: dict[str, type[Proposer]] = {
    cls.name: cls
    for cls in (
        RandomProposer,
        SequenceProposer,
        SpearmintProposer,
        HyperbandProposer,
        HyperoptProposer,
        BOHBProposer,
        TPEProposer,
        GPProposer,
        CMAESProposer,
        QMCProposer,
    )
}

REFUSED = {
    "eas": "needs TensorFlow and a DenseNet to grow, which aup-tui does not ship "
    "— use hyperband, bohb or hyperopt to tune a network's size instead",
}


def added_keys() -> dict[str, tuple[str, ...]]:
    """Each key some proposer writes into job configs → the proposers that write it (the reserved
    parameter names, derived from the classes so there is one place to change)."""
    keys: dict[str, tuple[str, ...]] = {}
    for name, cls in PROPOSERS.items():
        for key in cls.adds:
            keys[key] = keys.get(key, ()) + (name,)
    return keys


def proposer_class(name: Any, source: str = "experiment.json") -> type[Proposer]:
    """The proposer class called ``name``; a ConfigError naming ``source`` when there is none,
    or when the libraries it needs are not installed (checked without importing them)."""
    if isinstance(name, str) and name in REFUSED:
        raise ConfigError(f"proposer '{name}' in {source} {REFUSED[name]}")
    if not (isinstance(name, str) and name in PROPOSERS):
        raise ConfigError(f"unknown proposer '{name}' in {source} — available: {', '.join(PROPOSERS)}")
    cls = PROPOSERS[name]
    missing = [module for module in cls.requires if not installed(module)]
    if missing:
        raise ConfigError(
            f"proposer '{name}' in {source} needs {', '.join(missing)}, which is not "
            f"installed — pip install 'aup-tui[{cls.extra}]'"
        )
    return cls


def get_proposer(config: ExperimentConfig | dict) -> Proposer:
    """A fresh proposer for the experiment: its loaded config, or its dict (as Auptimizer takes
    it), checked as the file is."""
    config = as_experiment_config(config)
    return proposer_class(config.proposer, config.path or "experiment.json")(config)
