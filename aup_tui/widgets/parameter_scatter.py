"""Score against one parameter: a scatter drawn by textual-plotext (plotext in a widget).

textual-plotext draws axes, ticks, labels and categorical ticks itself and follows the app's
theme; 10,000 points build in ~0.1 s, paid only when the parameter shown changes or the widget
resizes. Categorical parameters are plotted at positions 0..k-1 labelled with their values. The
best job is drawn over the others in its own marker and colour.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aup_tui_backends.values import is_number
from textual_plotext import PlotextPlot

#: longest category label on the x axis (plotext would overlap longer ones)
MAX_LABEL = 12


def _label(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


@dataclass(frozen=True)
class ParameterSeries:
    """The points of one parameter: x positions, scores, category labels (empty: numeric)."""

    name: str
    xs: list[float]
    ys: list[float]
    categories: list[str]
    best: int | None  # index of the best job's point


def parameter_series(
    name: str,
    points: Sequence[tuple[int, dict[str, Any], float]],
    best_jid: int | None,
    choices: Sequence[Any] | None = None,
) -> ParameterSeries:
    """`points` ((jid, config, score)) against parameter `name`; categorical unless every value is
    a number and no `choices` (the parameter_config's range of a choice parameter) are given;
    categories in the order of `choices`, else sorted."""
    rows = [(jid, config[name], score) for jid, config, score in points if name in config]
    categorical = choices is not None or not all(is_number(v) for _, v, _ in rows)
    categories: list[str] = []
    if categorical:
        seen = [json.dumps(v, sort_keys=True) for _, v, _ in rows]
        order = [json.dumps(c, sort_keys=True) for c in choices] if choices is not None else sorted(set(seen))
        keys: dict[str, int] = {}
        for key in order + seen:  # the space's order, else sorted; a value outside it last
            keys.setdefault(key, len(keys))
        categories = [_label(json.loads(k)) for k in keys]
        xs = [float(keys[json.dumps(v, sort_keys=True)]) for _, v, _ in rows]
    else:
        xs = [float(v) for _, v, _ in rows]
    best = next((i for i, (jid, _, _) in enumerate(rows) if jid == best_jid), None)
    return ParameterSeries(name, xs, [s for _, _, s in rows], categories, best)


class ParameterScatter(PlotextPlot):
    """The score of every scored job against the parameter `show` was last given."""

    DEFAULT_CSS = "ParameterScatter { height: 1fr; width: 1fr; }"

    def __init__(self, score_label: str = "score", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.score_label = score_label
        self.series: ParameterSeries | None = None

    def show(self, series: ParameterSeries) -> None:
        """Plot `series` (replacing what was shown)."""
        self.series = series
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.ylabel(self.score_label)
        plt.xlabel(series.name)
        if not series.xs:
            plt.title(f"no scored job has {series.name}")
            self.refresh()
            return
        plt.scatter(series.xs, series.ys, marker="braille", color="cyan")
        if series.best is not None:
            plt.scatter([series.xs[series.best]], [series.ys[series.best]], marker="◆", color="orange+")
        if series.categories:
            plt.xticks(list(range(len(series.categories))), series.categories)
            plt.xlim(-0.5, len(series.categories) - 0.5)
        self.refresh()
