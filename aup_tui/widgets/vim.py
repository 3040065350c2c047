"""The vim keys, declared once: j/k one step down/up, g/G to the top/bottom.

Every table, screen and view that moves with them takes its bindings from `vim_bindings`, naming
its own actions for the moves it supports. They stay out of the footer (the help screen lists them).
"""

from __future__ import annotations

from textual.binding import Binding, BindingType

#: (key, move, description) of each vim key.
VIM_KEYS = (("j", "down", "Down"), ("k", "up", "Up"), ("g", "top", "Top"), ("G", "bottom", "Bottom"))

#: DataTable's own actions for the four moves.
TABLE_MOVES = {"down": "cursor_down", "up": "cursor_up", "top": "scroll_top", "bottom": "scroll_bottom"}


def vim_bindings(moves: dict[str, str], what: str = "") -> list[BindingType]:
    """Hidden bindings of the vim keys to `moves` (move → action; moves left out stay unbound).

    `what` names what moves, for the help screen: "Log" gives "Log top", "Log bottom".
    """
    return [
        Binding(key, moves[move], f"{what} {move}" if what else description, show=False)
        for key, move, description in VIM_KEYS
        if move in moves
    ]
