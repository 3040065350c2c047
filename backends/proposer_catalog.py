"""The proposers aup-tui has, and what each needs, declared without importing any of them.

The experiment file's checks (:mod:`.config`) read this table: whether a proposer exists, needs
``n_samples``, has its libraries installed, and which parameter names it reserves. The proposer
classes (:mod:`.proposers`) build on a checked config, so they sit above the checks, and this
table is what both share: each class takes its facts from its name's entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .optional import installed


@dataclass(frozen=True)
class ProposerSpec:
    """What is known about a proposer before it is built."""

    name: str
    #: False where the proposer decides how many jobs run (sequence: the grid; hyperband and
    #: bohb: their schedule), so experiment.json may leave ``n_samples`` out
    needs_n_samples: bool = True
    #: keys it writes into each job's config next to the parameters (reserved parameter names)
    adds: tuple[str, ...] = ()
    #: importable modules it needs, and the pip extra that brings them
    requires: tuple[str, ...] = ()
    extra: str = ""


_GP_LIBRARIES = ("sklearn", "scipy", "threadpoolctl")

#: every proposer by name, in the order ``unknown proposer`` lists them
PROPOSER_SPECS: dict[str, ProposerSpec] = {
    spec.name: spec
    for spec in (
        ProposerSpec("random"),
        ProposerSpec("sequence", needs_n_samples=False),
        ProposerSpec("spearmint", adds=("job_id",), requires=_GP_LIBRARIES, extra="gp"),
        ProposerSpec("hyperband", needs_n_samples=False, adds=("n_iterations", "tid")),
        ProposerSpec("hyperopt", adds=("tid",), requires=("optuna",), extra="optuna"),
        ProposerSpec(
            "bohb", needs_n_samples=False, adds=("n_iterations", "tid"), requires=("optuna",), extra="optuna"
        ),
        ProposerSpec("tpe", requires=("optuna",), extra="optuna"),
        ProposerSpec("gp", requires=_GP_LIBRARIES, extra="gp"),
        ProposerSpec("cmaes", requires=("optuna", "cmaes"), extra="cmaes"),
        ProposerSpec("qmc", requires=("optuna", "scipy"), extra="qmc"),
    )
}

#: Auptimizer's proposers aup-tui refuses, and why
REFUSED = {
    "eas": "needs TensorFlow and a DenseNet to grow, which aup-tui does not ship "
    "— use hyperband, bohb or hyperopt to tune a network's size instead",
}


def proposer_spec(name: object, source: str = "experiment.json") -> ProposerSpec:
    """The proposer called ``name``; a ConfigError naming ``source`` when there is none, or when
    the libraries it needs are not installed (checked without importing them)."""
    if isinstance(name, str) and name in REFUSED:
        raise ConfigError(f"proposer '{name}' in {source} {REFUSED[name]}")
    if not (isinstance(name, str) and name in PROPOSER_SPECS):
        raise ConfigError(f"unknown proposer '{name}' in {source} — available: {', '.join(PROPOSER_SPECS)}")
    spec = PROPOSER_SPECS[name]
    missing = [module for module in spec.requires if not installed(module)]
    if missing:
        raise ConfigError(
            f"proposer '{name}' in {source} needs {', '.join(missing)}, which is not "
            f"installed — pip install 'aup-tui[{spec.extra}]'"
        )
    return spec


def added_keys() -> dict[str, tuple[str, ...]]:
    """Each key some proposer writes into job configs → the proposers that write it."""
    keys: dict[str, tuple[str, ...]] = {}
    for name, spec in PROPOSER_SPECS.items():
        for key in spec.adds:
            keys[key] = keys.get(key, ()) + (name,)
    return keys


JOB_ID_KEY = "job_id"  # each job's config carries its id under this key, as Auptimizer writes it

_MEANING = {"tid": "their trial id", "n_iterations": "each job's budget"}


def _reserved() -> dict[str, str]:
    """The engine's key plus every key a proposer adds, each with why a parameter may not use it
    (a parameter of that name would be overwritten silently in the job's config file)."""
    names = {JOB_ID_KEY: "aup-tui writes each job's id under that key in the job's config"}
    for key, proposers in added_keys().items():
        if key not in names:
            many = len(proposers) > 1
            who = ", ".join(proposers[:-1]) + " and " + proposers[-1] if many else proposers[0]
            verb = "proposers write" if many else "proposer writes"
            names[key] = f"the {who} {verb} {_MEANING.get(key, 'its own value')} under that key"
    return names


#: parameter names nobody may use, each with the reason the loader gives
RESERVED_PARAMETER_NAMES: dict[str, str] = _reserved()
