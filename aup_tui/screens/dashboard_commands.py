"""The dashboard's command palette: only what applies to this experiment now.

Stopping is offered while the experiment runs and this process can stop it, resuming once it
stopped, failed or was interrupted, re-running failed jobs once it finished, answering a passive
job while one waits, another experiment while there is a store to pick from, probing while there
are nodes: the same rules (`DashboardScreen.check_action`) that show or hide the keys in the footer.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING

from ..widgets.job_table import COLUMNS, STATUS_FILTERS, JobTable
from .palette import PaletteCommand, ScreenCommands

if TYPE_CHECKING:
    from .dashboard import DashboardScreen


class DashboardCommands(ScreenCommands["DashboardScreen"]):
    """The dashboard's actions by name, for the experiment it shows."""

    def commands(self) -> Iterator[PaletteCommand]:
        screen: DashboardScreen = self.owner
        if self.allows("stop_job"):
            yield PaletteCommand(
                "Stop selected job", "ask the selected job to stop (s)", screen.action_stop_job
            )
        if self.allows("stop_experiment"):
            yield PaletteCommand(
                "Stop experiment", "stop the whole experiment (S)", screen.action_stop_experiment
            )
        yield PaletteCommand(
            "Open selected job", "its parameters, attempts, log and curve (enter)", screen.action_open_job
        )
        yield PaletteCommand("Filter jobs", "filter the job table by text (/)", screen.action_filter)
        table = screen.query_one(JobTable)
        if table.filter_text or table.filter_status:
            yield PaletteCommand("Clear filter", "show every job (escape)", screen.action_back)
        if self.allows("answer_passive"):
            yield PaletteCommand(
                "Answer waiting passive job",
                "open the form of a job waiting for you (p)",
                screen.action_answer_passive,
            )
        if self.allows("resume"):
            yield PaletteCommand(
                "Resume experiment",
                "run its failed, interrupted and stopped jobs again, then the rest of its budget (R)",
                screen.action_resume,
            )
        if self.allows("rerun_failed"):
            yield PaletteCommand(
                "Re-run failed jobs",
                "run each failed job's config again as its next attempt (ctrl+r)",
                screen.action_rerun_failed,
            )
        if self.allows("experiments"):
            yield PaletteCommand(
                "Experiments", "pick another experiment of this .aup (E)", screen.action_experiments
            )
        if self.allows("export"):
            yield PaletteCommand(
                "Export jobs",
                "write every job as CSV to <name>-e<eid>.csv in the current folder (e)",
                screen.action_export,
            )
        if self.allows("problems"):
            yield PaletteCommand(
                f"Problems ({len(screen.state.problems)})",
                "what went wrong so far: failed jobs and their reasons, warnings (!)",
                screen.action_problems,
            )
        yield PaletteCommand(
            "Parameter analysis",
            "which parameters matter, and the score against each (a)",
            screen.action_analysis,
        )
        yield PaletteCommand(
            "Score plot: order / time",
            "plot the scores over job order or time since the start (x)",
            screen.action_plot_axis,
        )
        nodes = screen.node_names
        if nodes:
            yield PaletteCommand(
                "Probe nodes now",
                "probe every SSH node now, ignoring backoff (r in the nodes panel)",
                screen.action_probe_nodes,
            )
        for name in nodes:
            yield PaletteCommand(
                f"Node: {name}",
                "open the node's details (enter in the nodes panel)",
                partial(screen.open_node, name),
            )
        for key, label, _ in COLUMNS:
            yield PaletteCommand(
                f"Sort jobs by {label}",
                f"sort the job table by {label} (click header / o)",
                partial(table.sort_by, key),
            )
        for status in STATUS_FILTERS:
            yield PaletteCommand(
                f"Show {'all' if status is None else status.lower()} jobs",
                "filter the job table by status (f)",
                partial(table.set_filter, None, status),
            )
