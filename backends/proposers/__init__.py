"""Proposers: where each job's parameters come from — Auptimizer 2.0's random, sequence, hyperopt,
spearmint, hyperband and bohb (eas is refused: it needs TensorFlow), plus tpe, gp, cmaes and qmc.

One module a family: :mod:`.basic` (random, sequence), :mod:`.optuna` (hyperopt, tpe, cmaes, qmc
on Optuna's samplers), :mod:`.gp` (spearmint, gp: a Gaussian process with expected improvement
over a candidate set, on scikit-learn), :mod:`.hyperband`, :mod:`.bohb`. Heavy libraries are
imported when a proposer is built, never by importing this package, so ``aup-tui --help`` and a
random search do not pay for them. What each proposer needs (``n_samples``, libraries, the keys it
adds) is declared in :mod:`aup_tui_backends.proposer_catalog`, which the experiment file's checks
read without importing this package; :data:`PROPOSERS` holds one class per catalogue entry.
"""

from __future__ import annotations

from typing import Any

from ..config import ExperimentConfig
from ..proposer_catalog import added_keys, proposer_spec
from .base import Proposer, as_experiment_config, config_key
from .basic import RandomProposer, SequenceProposer
from .bohb import BOHBProposer
from .gp import GPProposer, SpearmintProposer
from .hyperband import HyperbandProposer
from .optuna import CMAESProposer, HyperoptProposer, QMCProposer, TPEProposer

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


def proposer_class(name: object, source: str = "experiment.json") -> type[Proposer]:
    """The proposer class called ``name``; a ConfigError naming ``source`` when there is none,
    or when the libraries it needs are not installed (checked without importing them)."""
    return PROPOSERS[proposer_spec(name, source).name]


def get_proposer(config: ExperimentConfig | dict[str, Any]) -> Proposer:
    """A fresh proposer for the experiment: its loaded config, or its dict (as Auptimizer takes
    it), checked as the file is."""
    config = as_experiment_config(config)
    return proposer_class(config.proposer, config.path or "experiment.json")(config)
