"""Two or more experiments side by side: best-so-far curves on one plot, best configs in a table.

Opened from the picker (space marks, `c` compares). The store is read on a thread worker; the
table has a row per parameter (the union of the best configs' keys) and a column per experiment,
then the best score and the jobs finished of all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aup_tui_backends.status import JobStatus
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ..widgets.colors import fmt_score, on_theme_change, theme_colors
from ..widgets.compare_plot import ComparePlot, CompareSeries, series_color
from ..widgets.vim import TABLE_MOVES, vim_bindings

__all__ = ["ComparedExperiment", "CompareScreen", "compare_experiment"]


@dataclass(frozen=True)
class ComparedExperiment:
    """What the compare screen shows of one experiment."""

    eid: int
    name: str
    target: str = "max"
    best_score: float | None = None
    best_jid: int | None = None
    best_config: dict[str, Any] = field(default_factory=dict)
    finished: int = 0
    total: int = 0
    curve: tuple[float, ...] = ()  # the best score after each finished job, in finishing order

    @property
    def label(self) -> str:
        return f"{self.eid} {self.name}"


def compare_experiment(exp: dict[str, Any], jobs: Iterable[dict[str, Any]]) -> ComparedExperiment:
    """One experiment's record and job records, as the compare screen shows them."""
    jobs = list(jobs)
    target = str(exp.get("target") or "max")
    better = max if target == "max" else min
    scored = sorted(
        (j for j in jobs if j.get("status") == JobStatus.FINISHED and j.get("score") is not None),
        key=lambda j: (j.get("end") or 0.0, j["jid"]),
    )
    curve: list[float] = []
    for job in scored:
        score = float(job["score"])
        curve.append(better(curve[-1], score) if curve else score)
    best_jid = exp.get("best_jid")
    best_score = exp.get("best_score")
    if best_jid is None and scored:  # a running experiment records its best only at the end
        best = better(scored, key=lambda j: float(j["score"]))
        best_jid, best_score = best["jid"], best["score"]
    config = next((j.get("config") or {} for j in jobs if j["jid"] == best_jid), {})
    return ComparedExperiment(
        eid=int(exp["eid"]),
        name=str(exp.get("name", "")),
        target=target,
        best_score=best_score,
        best_jid=best_jid,
        best_config=dict(config),
        finished=len(scored),
        total=max(int(exp.get("n_samples") or 0), len(jobs)),
        curve=tuple(curve),
    )


def config_rows(experiments: Sequence[ComparedExperiment]) -> list[str]:
    """The parameters of the best configs, in the order they first appear."""
    names: dict[str, None] = {}
    for exp in experiments:
        names.update(dict.fromkeys(exp.best_config))
    return list(names)


def fmt_value(value: Any) -> str:
    return fmt_score(value) if isinstance(value, float) else str(value)


class CompareTable(DataTable):
    """Parameter rows × experiment columns (vim keys move too)."""

    BINDINGS = vim_bindings(TABLE_MOVES)


class CompareScreen(Screen):
    """Experiments `eids` compared. They come from the store (a worker) or are given
    (`experiments`, for tests and screenshots)."""

    CSS_PATH = "compare.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back", id="compare.back"),
        Binding("r", "reload", "Reload", id="compare.reload"),
    ]

    class Loaded(Message):
        def __init__(self, experiments: list[ComparedExperiment]) -> None:
            super().__init__()
            self.experiments = experiments

    def __init__(
        self,
        eids: Sequence[int] = (),
        *,
        connector: Any = None,
        rows: Sequence[dict[str, Any]] | None = None,
        experiments: Sequence[ComparedExperiment] | None = None,
    ) -> None:
        super().__init__()
        self.eids = list(eids) or [e.eid for e in experiments or ()]
        self.connector = connector
        self.rows = list(rows or ())  # the picker's rows: names and counts while the store is read
        self.experiments = list(experiments) if experiments is not None else None

    def compose(self) -> ComposeResult:
        yield Static(self._title(), id="compare-title")
        yield ComparePlot(id="compare-plot")
        yield CompareTable(id="compare-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def _title(self) -> str:
        return f"Comparing experiments {', '.join(map(str, self.eids))} — best so far over finished jobs"

    def on_mount(self) -> None:
        self.query_one("#compare-plot").border_title = "Best so far"
        self.query_one(CompareTable).border_title = "Best configs"
        on_theme_change(self, self._show)
        if self.experiments is not None:
            self._show()
        elif self.connector is not None:
            self.query_one(CompareTable).loading = True
            self._load()
        else:  # picker rows only (no store): best and counts, no curves or configs
            self.experiments = [compare_experiment(r, ()) for r in self.rows if r["eid"] in self.eids]
            self._show()
        self.query_one(CompareTable).focus()

    @work(thread=True, exclusive=True)
    def _load(self) -> None:
        conn = self.connector
        found = []
        for eid in self.eids:
            exp = conn.get_experiment(eid)
            if exp is not None:
                found.append(compare_experiment(exp, conn.jobs(eid)))
        self.post_message(self.Loaded(found))

    def on_compare_screen_loaded(self, message: Loaded) -> None:
        message.stop()
        self.experiments = message.experiments
        self.query_one(CompareTable).loading = False
        self._show()

    def _show(self) -> None:
        experiments = self.experiments or []
        colors = theme_colors(self.app)
        self.query_one(ComparePlot).set_series([CompareSeries(e.label, e.curve) for e in experiments])
        table = self.query_one(CompareTable)
        table.clear(columns=True)
        table.add_column("", key="what")
        for index, exp in enumerate(experiments):
            label = Text(exp.label, style=f"bold {series_color(colors, index)}")
            table.add_column(label, key=str(exp.eid))
        table.add_row(
            Text("best score", style="bold"),
            *(f"{fmt_score(e.best_score)} ({e.target})" for e in experiments),
            key="best",
        )
        table.add_row(
            Text("best job", style="bold"),
            *("—" if e.best_jid is None else str(e.best_jid) for e in experiments),
            key="best_jid",
        )
        table.add_row(
            Text("jobs finished", style="bold"),
            *(f"{e.finished}/{e.total}" for e in experiments),
            key="jobs",
        )
        for name in config_rows(experiments):
            table.add_row(
                Text(name),
                *(fmt_value(e.best_config[name]) if name in e.best_config else "—" for e in experiments),
                key=f"param:{name}",
            )

    def action_back(self) -> None:
        self.dismiss()

    def action_reload(self) -> None:
        if self.connector is not None:
            self._load()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "reload":
            return self.connector is not None
        return True
