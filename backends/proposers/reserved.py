"""Parameter names nobody may use: keys the engine or a proposer writes into every job's config.

A parameter with one of these names would be overwritten silently in the job's config file, so
the experiment loader refuses it. This is the one list: a proposer that adds a key adds it here.
"""
from __future__ import annotations

JOB_ID_KEY = "job_id"  # each job's config carries its id under this key, as Auptimizer writes it

RESERVED_PARAMETER_NAMES: dict[str, str] = {
    JOB_ID_KEY: "aup-tui writes each job's id under that key in the job's config",
    "tid": "the hyperopt, hyperband and bohb proposers write their trial id under that key",
    "n_iterations": "the hyperband and bohb proposers write each job's budget under that key",
}
