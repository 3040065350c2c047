"""The confirm dialog: `y`/`n`/escape and its buttons answer it (the key contract)."""

from __future__ import annotations

import pytest
from screens_support import Host

from aup_tui.screens.confirm import ConfirmScreen


@pytest.mark.parametrize(("key", "answer"), [("y", True), ("n", False), ("escape", False)])
async def test_keys_answer(key: str, answer: bool) -> None:
    app = Host(lambda: ConfirmScreen("Stop job 3 (running on cpu0)?"))
    async with app.run_test() as pilot:
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press(key)
        await pilot.pause()
        assert app.dismissed == [answer]
        assert not isinstance(app.screen, ConfirmScreen)


@pytest.mark.parametrize(("button", "answer"), [("#confirm-yes", True), ("#confirm-no", False)])
async def test_buttons_answer(button: str, answer: bool) -> None:
    app = Host(lambda: ConfirmScreen("Stop the experiment?", yes_label="Stop", no_label="Keep running"))
    async with app.run_test() as pilot:
        await pilot.pause()
        await pilot.click(button)
        await pilot.pause()
        assert app.dismissed == [answer]


async def test_shows_question_and_labels_and_enter_is_safe() -> None:
    app = Host(lambda: ConfirmScreen("Stop job 3?", yes_label="Stop", no_label="Keep"))
    async with app.run_test() as pilot:
        await pilot.pause()
        assert "Stop job 3?" in str(app.screen.query_one("#confirm-question").render())
        assert "Stop" in str(app.screen.query_one("#confirm-yes").label)
        assert "Keep" in str(app.screen.query_one("#confirm-no").label)
        await pilot.press("enter")  # focus starts on the safe answer
        await pilot.pause()
        assert app.dismissed == [False]


def test_bindings_have_descriptions() -> None:
    keys = {b.key: b.description for b in ConfirmScreen.BINDINGS}
    assert set(keys) == {"y", "n", "escape"} and all(keys.values())
