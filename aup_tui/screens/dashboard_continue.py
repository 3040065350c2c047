"""The dashboard's keys that start an ended experiment again: `R` resumes a stopped, failed or
interrupted one, `ctrl+r` runs a finished one's failed jobs again, and the job detail's `R` runs
one job's config again. The app plans and runs it (`AupApp.continue_experiment`, which asks
first); this says when each applies, as the footer, the palette and `?` show it."""

from __future__ import annotations

from typing import Any

from aup_tui_backends.status import ExperimentStatus, JobStatus

from ..sources import LiveSource
from ..state import ExperimentState


def _status(text: str) -> ExperimentStatus:
    """The experiment status `text` names (a view's CONNECTING reads as PENDING)."""
    try:
        return ExperimentStatus(text)
    except ValueError:
        return ExperimentStatus.PENDING


class ContinueActions:
    """Mixed into the dashboard, whose experiment `state`, `connector`, `source` and `app` it uses."""

    state: ExperimentState
    connector: Any
    source: Any
    app: Any

    def resume_applies(self) -> bool:
        return self._can_continue() and _status(self.state.status).is_resumable

    def rerun_failed_applies(self) -> bool:
        return (
            self._can_continue() and self.state.status == ExperimentStatus.FINISHED and self.state.failed > 0
        )

    def _can_continue(self) -> bool:
        """Whether this experiment is over, in the store, and this app may start it again."""
        return (
            self.state.eid is not None
            and not self.state.is_live
            and not getattr(self.app, "readonly", False)
            and hasattr(self.app, "continue_experiment")
            and (self.connector is not None or isinstance(self.source, LiveSource))
        )

    def action_resume(self) -> None:
        """Continue this stopped, failed or interrupted experiment here (asks first)."""
        if self.state.eid is not None and self.resume_applies():
            self.app.continue_experiment(self.state.eid, "resume")

    def action_rerun_failed(self) -> None:
        """Run this finished experiment's failed jobs again, as their next attempts (asks first)."""
        if self.state.eid is not None and self.rerun_failed_applies():
            self.app.continue_experiment(self.state.eid, "rerun")

    def can_rerun_job(self, jid: int) -> bool:
        """Whether job `jid` has ended in a finished experiment, so it can run again here (one
        that ended before its budget was spent is resumed instead: `R` on the dashboard)."""
        row = self.state.jobs.get(jid)
        if row is None or not self._can_continue():
            return False
        return self.state.status == ExperimentStatus.FINISHED and JobStatus(row.status).is_final

    def rerun_job(self, jid: int) -> None:
        """Run job `jid`'s config again as its next attempt (the job detail's `R`; asks first)."""
        if self.state.eid is not None and self.can_rerun_job(jid):
            self.app.continue_experiment(self.state.eid, "rerun", [jid])
