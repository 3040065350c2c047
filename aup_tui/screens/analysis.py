"""Parameter analysis: which parameters matter, and the score against each.

Left, the parameters with their importance (Optuna's PED-ANOVA over the finished jobs, computed
in a thread worker by `aup_tui_backends.analysis`; "computing…" until then, or why there is none);
right, the score of every scored job against the selected parameter, the best job highlighted.
Opened from the dashboard with `a`, on a snapshot of its jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aup_tui_backends.analysis import Importance, parameter_importance
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from ..widgets.parameter_scatter import ParameterScatter, parameter_series

BAR = 12  # importance bar width in cells
EIGHTHS = " ▏▎▍▌▋▊▉"


def importance_bar(share: float, width: int = BAR) -> str:
    """`share` (0..1) as a bar of `width` cells, in eighths of a cell."""
    eighths = round(max(0.0, min(1.0, share)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (EIGHTHS[part] if part else "")).ljust(width)


class AnalysisScreen(Screen[None]):
    """Importance of each parameter and the score against the selected one."""

    CSS_PATH = "analysis.tcss"
    BINDINGS = [
        Binding("escape,q", "back", "Back", id="analysis.back"),
    ]

    def __init__(
        self,
        title: str,
        points: Sequence[tuple[int, dict[str, Any], float]],
        maximize: bool,
        best_jid: int | None,
        parameter_config: list[dict[str, Any]] | None = None,
    ) -> None:
        """`points`: (jid, config, score) of every job that finished with a score."""
        super().__init__()
        self.title_text = title
        self.points = list(points)
        self.higher_is_better = maximize
        self.best_jid = best_jid
        self.parameter_config = parameter_config
        self.importance: Importance | None = None
        self._choices = {p["name"]: p["range"] for p in parameter_config or () if p.get("type") == "choice"}
        if parameter_config:
            self.names = [p["name"] for p in parameter_config]
        else:
            names: dict[str, None] = {}
            for _, config, _ in self.points:
                names.update(dict.fromkeys(config))
            self.names = list(names)

    def compose(self) -> ComposeResult:
        yield Static(self.title_text, id="analysis-title")
        with Horizontal(id="analysis-main"):
            with Vertical(id="analysis-left"):
                yield OptionList(*self._options(), id="parameters")
                yield Static("computing importance…", id="importance-note")
            yield ParameterScatter(
                score_label=f"score ({'higher' if self.higher_is_better else 'lower'} is better)",
                id="scatter",
            )
        yield Footer(compact=True)

    def on_mount(self) -> None:
        params = self.query_one("#parameters", OptionList)
        params.border_title = "Parameters"
        self.query_one("#scatter").border_title = "Score"
        if self.names:
            params.highlighted = 0
        else:
            self.query_one("#importance-note", Static).update("the jobs have no parameters")
        params.focus()
        self.call_after_refresh(self._compute_importance)  # after the first paint: it holds the GIL a while

    def _options(self) -> list[Option]:
        """One line a parameter: name, importance bar and share (sorted once importance is known)."""
        width = max((len(n) for n in self.names), default=0)
        values = self.importance.values if self.importance else {}
        names = sorted(self.names, key=lambda n: -values.get(n, -1.0)) if values else self.names
        options = []
        for name in names:
            parts: list[str | tuple[str, str]] = [(name.ljust(width), "bold")]
            if name in values:
                parts += [(f" {importance_bar(values[name])}", "$accent"), f" {values[name]:4.0%}"]
            options.append(Option(Content.assemble(*parts), id=name))
        return options

    @work(thread=True, exclusive=True, group="importance")
    def _compute_importance(self) -> None:
        jobs = [(config, score) for _, config, score in self.points]
        try:
            result = parameter_importance(jobs, self.higher_is_better, self.parameter_config)
        except Exception as exc:  # noqa: BLE001 — the scatter stays useful when Optuna fails
            result = Importance(reason=f"importance failed: {type(exc).__name__}: {exc}")
        self.app.call_from_thread(self.show_importance, result)

    def show_importance(self, result: Importance) -> None:
        """Sort the parameters by `result` and draw their bars (or say why there are none)."""
        self.importance = result
        params = self.query_one("#parameters", OptionList)
        selected = self.selected_parameter
        params.clear_options()
        params.add_options(self._options())
        if selected is not None:
            params.highlighted = params.get_option_index(selected)
        note = self.query_one("#importance-note", Static)
        if result.reason:
            note.update(f"no importance: {result.reason}")
        else:
            of = f" of {result.sampled_from:,} (a sample)" if result.sampled_from else ""
            note.update(f"importance: {result.method} over {result.jobs:,}{of} finished jobs")

    @property
    def selected_parameter(self) -> str | None:
        params = self.query_one("#parameters", OptionList)
        if params.highlighted is None:
            return None
        return params.get_option_at_index(params.highlighted).id

    @on(OptionList.OptionHighlighted, "#parameters")
    def _parameter_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        name = event.option.id
        if name is None:
            return
        series = parameter_series(name, self.points, self.best_jid, self._choices.get(name))
        scatter = self.query_one(ParameterScatter)
        scatter.border_title = f"Score vs {name}"
        scatter.border_subtitle = f"{len(series.xs)} jobs" + (" · ◆ best" if series.best is not None else "")
        scatter.show(series)

    def action_back(self) -> None:
        self.dismiss(None)
