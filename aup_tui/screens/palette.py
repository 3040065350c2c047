"""The command palette's commands of one screen, as a Textual command `Provider`.

A screen lists its provider in `COMMANDS`; Textual asks it only while that screen is the one the
palette was opened on, so the palette offers what applies there and then. App-wide commands
(quit, help, themes) are the app's system commands (`AupApp.get_system_commands`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, NamedTuple, TypeVar, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import Screen

ScreenT = TypeVar("ScreenT", bound="Screen[Any]")


class PaletteCommand(NamedTuple):
    """One palette entry: what the person reads, a hint (with the key), what it does."""

    name: str
    help: str
    run: Callable[[], object]


class ScreenCommands(Provider, Generic[ScreenT]):
    """Base of a screen's palette provider: `commands()` lists the commands that apply now.

    `ScreenCommands[PickerScreen]` is the provider in `PickerScreen.COMMANDS`; `owner` is that
    screen, typed as such (Textual types a provider's `screen` as any screen).
    """

    @property
    def owner(self) -> ScreenT:
        """The screen whose `COMMANDS` list this provider: the only one Textual asks it for."""
        return cast(ScreenT, self.screen)

    def commands(self) -> Iterable[PaletteCommand]:
        raise NotImplementedError

    def allows(self, action: str) -> bool:
        """Whether the screen's `check_action` enables `action` now (as for its key in the footer)."""
        return self.screen.check_action(action, ()) is True

    async def discover(self) -> Hits:
        for command in self.commands():
            yield DiscoveryHit(command.name, command.run, help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self.commands():
            score = matcher.match(command.name)
            if score > 0:
                yield Hit(score, matcher.highlight(command.name), command.run, help=command.help)
