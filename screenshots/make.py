"""Regenerate the README's screenshots: `python screenshots/make.py` (from the repository root).

Renders the same deterministic scenes as the snapshot tests (tests/scenes.py: fixed clock, fixed
scores) with `App.run_test()` and writes one SVG per scene into this folder.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import panel_scenes  # noqa: E402  (the GPU and nodes panels, the node detail)
import scenes  # noqa: E402
import test_compare  # noqa: E402  (the compare screen's fixed data)
import test_problems  # noqa: E402  (the demo experiment after failures)

from aup_tui.app import AupApp  # noqa: E402


async def _show_compare(pilot) -> None:
    await pilot.app.push_screen(test_compare.scene())
    await pilot.pause()


async def _node_detail_shown(pilot) -> None:
    """The scene pushes the node detail after its first refresh: wait for it (a fixed pause
    sometimes caught the dashboard's empty frame, or the detail without its footer)."""
    from aup_tui.screens.node_detail import NodeDetailScreen

    for _ in range(100):
        if isinstance(pilot.app.screen, NodeDetailScreen):
            break
        await pilot.pause(0.05)
    await pilot.pause(0.2)


def _analysis_app():
    """The analysis screen of the run recorded in tests/fixtures/analysis_run (a real run)."""
    import shutil
    import tempfile

    from aup_tui_backends.store import TinyDBConnector
    from screens_support import Host

    from aup_tui.screens.analysis import AnalysisScreen

    folder = Path(tempfile.mkdtemp(prefix="aup-shot-"))
    shutil.copytree(ROOT / "tests" / "fixtures" / "analysis_run" / "aup", folder / ".aup")
    conn = TinyDBConnector(str(folder / ".aup"))
    exp = conn.get_experiment(1)
    points = [(j["jid"], j["config"], j["score"]) for j in conn.jobs(1) if j.get("score") is not None]
    conn.close()
    best = max(points, key=lambda p: p[2])[0]
    space = [
        {"name": "lr", "range": [0.0, 1.0], "type": "float"},
        {"name": "layers", "range": [1, 6], "type": "int"},
        {"name": "optimizer", "range": ["adam", "sgd", "rmsprop"], "type": "choice"},
    ]
    return Host(lambda: AnalysisScreen(f"Parameter analysis — {exp['name']} #1", points, True, best, space))


async def _analysis_computed(pilot) -> None:
    from screens_support import wait_until

    from aup_tui.screens.analysis import AnalysisScreen

    await wait_until(pilot, lambda: isinstance(pilot.app.screen, AnalysisScreen))
    await wait_until(pilot, lambda: pilot.app.screen.importance is not None, timeout=30)
    await pilot.pause()


#: file name → (app factory, terminal size, keys to press first or a coroutine to run first)
SCENES = {
    "dashboard-dark": (lambda: scenes.dashboard_app("aup-dark"), (120, 34), []),
    "dashboard-light": (lambda: scenes.dashboard_app("aup-light"), (120, 34), []),
    "dashboard-high-contrast": (lambda: scenes.dashboard_app("aup-high-contrast"), (120, 34), []),
    "dashboard-80x24": (lambda: scenes.dashboard_app("aup-dark"), (80, 24), []),
    "dashboard-passive-waiting": (
        lambda: scenes.dashboard_app("aup-dark", waiting=True),
        (100, 30),
        ["escape"],
    ),
    "passive-form": (lambda: scenes.dashboard_app("aup-dark", waiting=True), (100, 30), []),
    "stop-job-confirm": (lambda: scenes.dashboard_app("aup-dark"), (100, 30), ["G", "s"]),
    "dashboard-filter": (lambda: scenes.dashboard_app("aup-dark"), (100, 30), ["slash", *"finished cpu1"]),
    "picker": (lambda: scenes.picker_app("aup-dark"), (100, 24), []),
    "empty": (lambda: scenes.empty_app("aup-dark"), (80, 24), []),
    "panels-80x24": (lambda: panel_scenes.panels_app("aup-dark"), (80, 24), []),
    "panels-100x40": (lambda: panel_scenes.panels_app("aup-dark"), (100, 40), []),
    "panels-200x50": (lambda: panel_scenes.panels_app("aup-dark"), (200, 50), []),
    "panels-no-nvml": (lambda: panel_scenes.panels_app("aup-dark", gpus=False), (200, 50), []),
    "node-detail-down": (lambda: panel_scenes.node_detail_app("node 3"), (80, 24), _node_detail_shown),
    "node-detail-gpus": (lambda: panel_scenes.node_detail_app("node 1"), (200, 50), _node_detail_shown),
    "analysis": (_analysis_app, (110, 30), _analysis_computed),
    "compare": (
        lambda: AupApp(picker_rows=scenes.picker_rows(), clock=scenes.CLOCK, find=False),
        (100, 32),
        _show_compare,
    ),
    "problems": (test_problems.troubled_app, (100, 30), ["exclamation_mark"]),
    "job-detail": (lambda: scenes.dashboard_app("aup-dark"), (100, 30), ["G", "enter"]),
}


async def render(name: str, factory, size, keys) -> Path:
    app = factory()
    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.2)
        if callable(keys):
            await keys(pilot)
        elif keys:
            await pilot.press(*keys)
            await pilot.pause(0.4)
        path = HERE / f"{name}.svg"
        path.write_text(app.export_screenshot(title=f"aup-tui — {name}"), encoding="utf-8")
    return path


async def main(only: list[str]) -> None:
    for name, (factory, size, keys) in SCENES.items():
        if only and name not in only:
            continue
        path = await render(name, factory, size, keys)
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
