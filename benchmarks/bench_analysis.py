"""How fast the parameter analysis screen opens: `python benchmarks/bench_analysis.py [--jobs N]`.

A store holding one finished experiment of 10,000 jobs × 5 parameters (3 floats, an int, a
choice). Measured in the same run:

- floor: reading those jobs from the store (a fresh connector's `jobs(eid)`), what any view of
  them pays first;
- open: from pushing the analysis screen to its first frame with the scatter drawn;
- importance: from pushing it to the importance bars shown (PED-ANOVA in a thread worker);
- next parameter: from `down` in the parameter list to the scatter of the next one drawn.

Prints each in seconds and open / floor as a ratio. Runs the app headless (`App.run_test`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from aup_tui_backends.store import TinyDBConnector  # noqa: E402
from textual.app import App  # noqa: E402

from aup_tui.screens.analysis import AnalysisScreen  # noqa: E402
from aup_tui.widgets.parameter_scatter import ParameterScatter  # noqa: E402

SPACE = [
    {"name": "lr", "type": "float", "range": [0.0, 1.0]},
    {"name": "momentum", "type": "float", "range": [0.0, 1.0]},
    {"name": "decay", "type": "float", "range": [0.0, 1.0]},
    {"name": "layers", "type": "int", "range": [1, 8]},
    {"name": "optimizer", "type": "choice", "range": ["adam", "sgd", "rmsprop"]},
]


def write_store(auppath: str, n: int) -> int:
    """A finished experiment of `n` jobs whose score depends mostly on lr."""
    rng = random.Random(7)
    c = TinyDBConnector(auppath)
    eid = c.start_experiment("bench", "analysis", {"parameter_config": SPACE}, target="max", n_samples=n)
    rid = c.add_resource("cpu0", "cpu")
    for jid in range(1, n + 1):
        config = {
            "lr": rng.random(),
            "momentum": rng.random(),
            "decay": rng.random(),
            "layers": rng.randint(1, 8),
            "optimizer": rng.choice(["adam", "sgd", "rmsprop"]),
        }
        score = 1 - (config["lr"] - 0.3) ** 2 * 4 + 0.05 * config["layers"] / 8 + rng.random() * 0.02
        c.start_job(eid, jid, config, rid, "cpu:cpu0", 1)
        c.end_job(eid, jid, score, "FINISHED", values=[score])
    c.end_experiment(eid, "FINISHED")
    c.close()
    return eid


async def time_screen(points: list, best: int) -> tuple[float, float, float]:
    """Seconds to the first frame with the scatter drawn, to the importance bars, and to the
    scatter of the next parameter after `down`."""
    drawn: list[float] = []
    render = ParameterScatter.render

    def timed_render(self: ParameterScatter):  # type: ignore[no-untyped-def]
        out = render(self)
        if self.series is not None:
            drawn.append(time.perf_counter())
        return out

    ParameterScatter.render = timed_render  # type: ignore[method-assign]
    app = App()
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.pause(0.2)
        start = time.perf_counter()
        screen = AnalysisScreen("bench", points, True, best, SPACE)
        app.push_screen(screen)
        while not drawn:
            await asyncio.sleep(0.005)
        while screen.importance is None:
            await asyncio.sleep(0.01)
        done = time.perf_counter()
        drawn_first = drawn[0]
        assert screen.importance.values, screen.importance.reason
        assert next(iter(screen.importance.values)) == "lr", screen.importance.values
        await pilot.pause(0.2)
        drawn.clear()
        start_switch = time.perf_counter()
        await pilot.press("down")
        while not drawn:
            await asyncio.sleep(0.005)
        switched = drawn[0] - start_switch
    ParameterScatter.render = render  # type: ignore[method-assign]
    return drawn_first - start, done - start, switched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        auppath = os.path.join(folder, ".aup")
        t = time.perf_counter()
        eid = write_store(auppath, args.jobs)
        print(f"store of {args.jobs} jobs written in {time.perf_counter() - t:.1f} s")
        c = TinyDBConnector(auppath)
        t = time.perf_counter()
        jobs = c.jobs(eid)
        floor = time.perf_counter() - t
        c.close()
    points = [(j["jid"], j["config"], j["score"]) for j in jobs if j.get("score") is not None]
    best = max(points, key=lambda p: p[2])[0]
    opened, importance, switched = asyncio.run(time_screen(points, best))
    print(f"floor (read {len(jobs)} jobs from the store): {floor:.3f} s")
    print(f"analysis screen open (scatter drawn):     {opened:.3f} s  = {opened / floor:.1f}× the floor")
    print(
        f"importance shown (PED-ANOVA, a thread):   {importance:.3f} s  = {importance / floor:.1f}× the floor"
    )
    print(f"next parameter drawn (down):              {switched:.3f} s")


if __name__ == "__main__":
    main()
