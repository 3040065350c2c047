"""Parameter names nobody may use: keys the engine or a proposer writes into every job's config.

A parameter with one of these names would be overwritten silently in the job's config file, so
the experiment loader refuses it. The list is derived from the proposer classes' ``adds``:
that is the one place a proposer's keys are declared.
"""

from __future__ import annotations

JOB_ID_KEY = "job_id"  # each job's config carries its id under this key, as Auptimizer writes it

_MEANING = {"tid": "their trial id", "n_iterations": "each job's budget"}


def _reserved() -> dict[str, str]:
    """The engine's key plus every key a proposer class declares in ``adds`` (derived, so a new
    proposer's keys are reserved by declaring them on its class)."""
    from . import added_keys

    names = {JOB_ID_KEY: "aup-tui writes each job's id under that key in the job's config"}
    for key, proposers in added_keys().items():
        if key not in names:
            many = len(proposers) > 1
            who = ", ".join(proposers[:-1]) + " and " + proposers[-1] if many else proposers[0]
            verb = "proposers write" if many else "proposer writes"
            names[key] = f"the {who} {verb} {_MEANING.get(key, 'its own value')} under that key"
    return names


RESERVED_PARAMETER_NAMES: dict[str, str] = _reserved()
