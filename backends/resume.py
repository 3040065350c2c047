"""Continue an ended experiment under its own id: `resume` runs the rest of its budget, `rerun`
runs its failed jobs' configurations again.

Both read the store (once what dead processes left RUNNING is recorded INTERRUPTED) and return a
`ResumePlan`; `Experiment.resume(plan)` runs it. A plan holds the proposer rebuilt from the jobs
that ran to their end (FINISHED, EARLY_STOPPED, or STOPPED alone by a person: told their scores
through `Proposer.replay`, as if it had proposed them in this process), and the jobs to run again
(failed, interrupted, stopped with the experiment). A job run again is a new attempt of the same
job id, as a retry is: its row, its attempts and its logs (`jobs/<jid>.<attempt>.out`) stay
together, and the totals count it once, with its latest outcome.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .config import ExperimentConfig, validate_experiment
from .errors import AupError, ConfigError
from .proposers import Proposer, config_key, get_proposer
from .proposers.base import Params
from .status import ExperimentStatus, JobStatus
from .store import TinyDBConnector
from .store.process import owner_alive

#: what a job ended with that `resume` keeps: it ran to its end (a score, or the policy's stop)
KEPT = frozenset({JobStatus.FINISHED, JobStatus.EARLY_STOPPED})
#: why a job stopped with its whole experiment (`Experiment.stop`, Auptimizer's `suspend`): it
#: runs again on resume, while one a person stopped alone is kept, as the run counted it
STOPPED_WITH_EXPERIMENT = ("experiment stopped", "experiment suspended")
#: what `rerun --failed` runs again
FAILED = frozenset({JobStatus.FAILED, JobStatus.INTERRUPTED})


class NotResumable(AupError):
    """The experiment can't be continued (running now, finished, no config on record)."""


@dataclass
class ResumePlan:
    """What `Experiment.resume` runs: experiment `eid` continued with `proposer`.

    A proposal whose configuration is that of a job in `again` runs as that job's next attempt
    (`take_job`); any other is a new job."""

    eid: int
    config: ExperimentConfig
    proposer: Proposer
    kind: str  # "resume" or "rerun"
    status: ExperimentStatus  # how the experiment had ended
    n_samples: int  # the experiment's budget, as its progress counts it
    finished: int  # jobs kept that finished with a score
    to_run: int  # jobs this run starts: the rest of the budget, or the jobs run again
    again: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # config key → job records

    @property
    def rerun_jids(self) -> list[int]:
        return sorted(doc["jid"] for docs in self.again.values() for doc in docs)

    def take_job(self, params: Params) -> dict[str, Any] | None:
        """The record of an earlier job with these parameters, to run as its next attempt."""
        docs = self.again.get(config_key(params))
        return docs.pop(0) if docs else None


def running_now(exp: dict[str, Any]) -> bool:
    """A live process runs experiment `exp` (its record says RUNNING and its owner lives)."""
    return exp.get("status") == ExperimentStatus.RUNNING and owner_alive(exp.get("owner"))


def why_not_resumable(connector: TinyDBConnector, exp: dict[str, Any]) -> str | None:
    """Why experiment `exp` (its store record) can't be resumed; None when it can."""
    eid, status = exp["eid"], exp.get("status")
    if running_now(exp):
        return (
            f"experiment {eid} is running now (process {exp['owner'][0]} on {exp.get('host') or 'this host'})"
        )
    if status == ExperimentStatus.FINISHED:
        failed = sum(1 for j in connector.job_rows(eid) if j["status"] in FAILED)
        hint = f" — `aup-tui rerun {eid} --failed` runs its {failed} failed job(s) again" if failed else ""
        return f"experiment {eid} finished: nothing to resume{hint}"
    if not ExperimentStatus(status).is_resumable and status != ExperimentStatus.RUNNING:  # a dead owner
        return f"experiment {eid} is {status}: only a stopped, failed or interrupted one can be resumed"
    if not connector.experiment_config(eid):
        return f"experiment {eid} has no experiment file on record (run through the API): nothing to resume"
    return None


def why_no_rerun(connector: TinyDBConnector, exp: dict[str, Any], failed_only: bool = True) -> str | None:
    """Why experiment `exp`'s failed jobs (any of its jobs: `failed_only` False) can't be run
    again; None when they can. Only a finished experiment's: one that ended before its budget was
    spent is resumed instead (which runs its failed jobs again too), else it would end FINISHED
    with its budget unspent."""
    eid, status = exp["eid"], exp.get("status")
    if running_now(exp):
        return f"experiment {eid} is running now: its jobs can be run again once it ends"
    if failed_only and not any(j["status"] in FAILED for j in connector.job_rows(eid)):
        return f"experiment {eid} has no failed job to run again"
    if status != ExperimentStatus.FINISHED:
        return (
            f"experiment {eid} is {str(status).lower()} before its budget was spent: "
            f"`aup-tui resume {eid}` runs its failed jobs again and the rest of its budget"
        )
    if not connector.experiment_config(eid):
        return (
            f"experiment {eid} has no experiment file on record (run through the API): nothing to run again"
        )
    return None


def latest(
    connector: TinyDBConnector, why_not: Callable[[TinyDBConnector, dict[str, Any]], str | None]
) -> dict[str, Any] | None:
    """The newest experiment `why_not(connector, exp)` has nothing against."""
    for exp in reversed(connector.experiments()):
        if why_not(connector, exp) is None:
            return dict(exp)
    return None


def recorded_config(connector: TinyDBConnector, exp: dict[str, Any]) -> ExperimentConfig:
    """The experiment's config as it started: its file's content as recorded, with the working
    folder and script it ran with (the file may have moved or changed since)."""
    raw = connector.experiment_config(exp["eid"])
    path = exp.get("path")
    source = path or f"experiment {exp['eid']}'s recorded config"
    base = os.path.dirname(path) if path else exp.get("workingdir")
    try:
        config = validate_experiment(raw, source=source, base_dir=base)
    except ConfigError as exc:
        raise NotResumable(f"experiment {exp['eid']}: its recorded config is refused now: {exc}") from None
    return dataclasses.replace(
        config,
        path=path,
        workingdir=exp.get("workingdir") or config.workingdir,
        script=exp.get("script") or config.script,
    )


def _ran_to_its_end(job: dict[str, Any]) -> bool:
    """Finished, stopped by the early-stopping policy, or stopped alone by a person."""
    status = job["status"]
    return status in KEPT or (status == JobStatus.STOPPED and job.get("error") not in STOPPED_WITH_EXPERIMENT)


def _group(docs: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in sorted(docs, key=lambda d: d["jid"]):
        out.setdefault(config_key(doc.get("config") or {}), []).append(doc)
    return out


def plan_resume(connector: TinyDBConnector, eid: int) -> ResumePlan:
    """The rest of experiment `eid`'s budget: the proposer replayed with the jobs that ran to
    their end; failed and interrupted jobs, and those stopped with the experiment, are proposed
    again (as their next attempt)."""
    exp = _record(connector, eid)
    why = why_not_resumable(connector, exp)
    if why:
        raise NotResumable(why)
    config = recorded_config(connector, exp)
    jobs = connector.jobs(eid)
    kept = [j for j in jobs if _ran_to_its_end(j)]
    again = [j for j in jobs if not _ran_to_its_end(j)]
    proposer = get_proposer(config)
    proposer.replay((j["config"], j["score"] if j["status"] == JobStatus.FINISHED else None) for j in kept)
    proposer.enqueue(j["config"] for j in again)
    return ResumePlan(
        eid=eid,
        config=config,
        proposer=proposer,
        kind="resume",
        status=_ended_status(exp),
        n_samples=proposer.n_samples,
        finished=sum(1 for j in kept if j["status"] == JobStatus.FINISHED),
        to_run=max(0, proposer.n_samples - len(kept)),
        again=_group(again),
    )


class RerunProposer(Proposer):
    """Hands out given configurations once each (the failed jobs `rerun` runs again)."""

    name = "rerun"

    def __init__(self, config: ExperimentConfig, configs: list[Params]) -> None:
        super().__init__(config)
        self._queue = [dict(c) for c in configs]
        self.n_samples = len(self._queue)

    def _propose(self) -> Params | None:
        return self._queue.pop(0) if self._queue else None


def plan_rerun(connector: TinyDBConnector, eid: int, jids: Iterable[int] | None = None) -> ResumePlan:
    """Experiment `eid`'s failed jobs (or the ended jobs `jids`) run again, each as its next attempt."""
    exp = _record(connector, eid)
    jobs = connector.jobs(eid)
    if jids is None:
        why = why_no_rerun(connector, exp)
        if why:
            raise NotResumable(why)
        chosen = [j for j in jobs if j["status"] in FAILED]
    else:
        why = why_no_rerun(connector, exp, failed_only=False)
        if why:
            raise NotResumable(why)
        wanted = set(jids)
        chosen = [j for j in jobs if j["jid"] in wanted]
        live = [j["jid"] for j in chosen if not JobStatus(j["status"]).is_final]
        if live or len(chosen) != len(wanted):
            what = f"job {live[0]} has not ended" if live else f"no job {sorted(wanted)} in experiment {eid}"
            raise NotResumable(what)
    config = recorded_config(connector, exp)
    rerun = {j["jid"] for j in chosen}
    return ResumePlan(
        eid=eid,
        config=config,
        proposer=RerunProposer(config, [j["config"] for j in chosen]),
        kind="rerun",
        status=_ended_status(exp),
        n_samples=int(exp.get("n_samples") or 0),
        finished=sum(1 for j in jobs if j["status"] == JobStatus.FINISHED and j["jid"] not in rerun),
        to_run=len(chosen),
        again=_group(chosen),
    )


def _ended_status(exp: dict[str, Any]) -> ExperimentStatus:
    """How the experiment ended; RUNNING on record with its process gone is INTERRUPTED."""
    status = ExperimentStatus(exp["status"])
    return ExperimentStatus.INTERRUPTED if status.is_live else status


def _record(connector: TinyDBConnector, eid: int) -> dict[str, Any]:
    """Experiment `eid`'s record, once what dead processes left RUNNING is recorded INTERRUPTED."""
    connector.recover()
    exp = connector.get_experiment(eid)
    if exp is None:
        raise NotResumable(f"no experiment {eid} in this .aup — `aup-tui status` shows the latest")
    return exp
