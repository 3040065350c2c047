"""Following a job's log file: `FileTail` reads (in a worker thread), `LogView` shows.

`FileTail` knows nothing of Textual so the reading can run anywhere; `LogView` is handed text and
never touches the disk. Memory stays bounded however long the log gets: the reader skips what a
flood wrote between two reads and `LogView` holds only the last `max_lines` lines (a bounded tail,
not an index of the whole file: an index grows with the log and every jump or search would read
the disk, while the last lines are what a running job's log is read for).
"""

from __future__ import annotations

import codecs
import os
import re
from typing import BinaryIO

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.selection import Selection
from textual.strip import Strip

#: How much of an existing log is shown on open; older output is skipped with a marker.
INITIAL_BYTES = 1024 * 1024
#: Most bytes taken in one read: a job that floods its log is followed by skipping, not lagging.
MAX_READ_BYTES = 1024 * 1024
#: Lines the view holds; older ones are dropped (the border says how many are shown).
MAX_LINES = 10_000
#: Longest line held: a job writing without newlines cannot grow one line without bound.
MAX_LINE_CHARS = 4096

_CHUNK = 1024 * 1024
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class FileTail:
    """What a growing file gained since the last read, decoded as UTF-8.

    The first read shows only the last `initial_bytes` (starting at a line boundary), a read
    never takes more than `max_read` bytes (skipping ahead with a marker), a UTF-8 character
    split across reads is decoded whole, and a truncated or replaced file is read again from
    its start. A partial last line is returned as it is: `LogView` completes it on the next read.
    `skipped_lines` counts the lines skipped so far, so the view can say how many exist.
    """

    def __init__(self, path: str, initial_bytes: int = INITIAL_BYTES, max_read: int = MAX_READ_BYTES) -> None:
        self.path = path
        self.initial_bytes = initial_bytes
        self.max_read = max(max_read, initial_bytes)
        self.offset: int | None = None  # None until the file was first seen
        self.skipped_lines = 0
        self._inode: tuple[int, int] | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    @property
    def exists(self) -> bool:
        return self.offset is not None

    def read(self) -> str | None:
        """New text since the last call ("" when none); None while the file does not exist."""
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                size = st.st_size
                inode = (st.st_dev, st.st_ino)
                prefix = ""
                if self.offset is None or inode != self._inode or size < self.offset:
                    if self.offset is not None:
                        prefix = "\n… the log was truncated or replaced; reading it again …\n"
                    self._inode = inode
                    self._decoder.reset()
                    self.offset = 0
                    self.skipped_lines = 0
                    limit = self.initial_bytes
                else:
                    limit = self.max_read
                pending = size - self.offset
                if pending <= 0:
                    return prefix
                skip_to_line = False
                skipped = skipped_lines = 0
                if pending > limit:
                    skipped = pending - limit
                    skipped_lines = _count_lines(f, self.offset, size - limit)
                    self.offset = size - limit
                    self._decoder.reset()
                    skip_to_line = True
                f.seek(self.offset)
                data = f.read(size - self.offset)
        except FileNotFoundError:
            return None if self.offset is None else ""
        self.offset += len(data)
        if skip_to_line:
            newline = data.find(b"\n")
            data = data[newline + 1 :] if newline >= 0 else b""
            self.skipped_lines += skipped_lines
            # the marker stands in for the line cut at the skip point, so lines add up
            prefix += f"… {skipped_lines:,} lines ({_size(skipped)}) of earlier output not shown …\n"
        return prefix + self._decoder.decode(data)

    def flush(self) -> str:
        """Whatever an unfinished UTF-8 sequence at the end holds (call once the file is complete)."""
        return self._decoder.decode(b"", final=True)


def _count_lines(f: BinaryIO, start: int, end: int) -> int:
    """Newlines in bytes `start`..`end` of `f`, read a chunk at a time (memory stays flat)."""
    f.seek(start)
    count = 0
    while start < end:
        chunk = f.read(min(_CHUNK, end - start))
        if not chunk:
            break
        count += chunk.count(b"\n")
        start += len(chunk)
    return count


def _size(n: int) -> str:
    return f"{n / 1024:.0f} KB" if n < 1024 * 1024 else f"{n / (1024 * 1024):.1f} MB"


def _shown(line: str) -> str:
    """A line as drawn: tabs expanded, control characters made visible."""
    return _CONTROL.sub("�", line.expandtabs())


class LogView(ScrollView, can_focus=True):
    """A job's output as it grows: the last `max_lines` lines, following the end, searchable.

    Lines are drawn with the Line API (only the visible ones), so the cost of a frame does not
    depend on how many lines are held. `dropped_lines` counts lines no longer held (dropped here
    or skipped by the reader), so `total_lines` is what the log has written. Scrolling up stops
    following the end (new lines would pull the view away from what is being read); scrolling to
    the end follows again.
    """

    class FollowChanged(Message):
        """The view started or stopped following the end."""

        def __init__(self, following: bool) -> None:
            super().__init__()
            self.following = following

    ALLOW_SELECT = True
    COMPONENT_CLASSES = {"log-view--match", "log-view--current-match"}
    DEFAULT_CSS = """
    LogView {
        background: $surface;
        color: $text;
        overflow: scroll;
        &:focus { background-tint: $foreground 5%; }
        & > .log-view--match { background: $warning-muted; }
        & > .log-view--current-match { background: $warning; color: $background; text-style: bold; }
    }
    """

    def __init__(
        self,
        *,
        max_lines: int = MAX_LINES,
        placeholder: str = "",
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.max_lines = max_lines
        self.placeholder = placeholder
        self.auto_scroll = True
        self.dropped_lines = 0
        self._lines: list[str] = []  # the last one is the line being written ("" after a newline)
        self._width = 0
        self._has_text = False
        self._query = ""
        self._current_match: int | None = None  # absolute line number of the match jumped to

    # -- what is held ----------------------------------------------------------------------

    @property
    def lines(self) -> list[str]:
        """The lines held (read only)."""
        return self._lines

    @property
    def line_count(self) -> int:
        """Lines held, not counting an empty line after the last newline."""
        return len(self._lines) - (self._lines[-1] == "") if self._lines else 0

    @property
    def total_lines(self) -> int:
        return self.dropped_lines + self.line_count

    def on_mount(self) -> None:
        if self.placeholder:
            self.show_placeholder(self.placeholder)

    def on_resize(self) -> None:
        # A follower that shrank (the screen filled in above it) must still show the newest line.
        if self.auto_scroll:
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True, x_axis=False)

    def clear(self) -> None:
        self._lines = []
        self._width = 0
        self.dropped_lines = 0
        self._current_match = None
        self._update_size()
        self.scroll_to(0, 0, animate=False, immediate=True)
        self.refresh()

    def show_placeholder(self, message: str) -> None:
        """Show `message` (e.g. "no output yet") until text arrives."""
        self.clear()
        self._has_text = False
        self._write(message)
        self.add_class("-placeholder")

    def append(self, text: str, skipped_lines: int = 0) -> None:
        """Add text read from the log; a partial last line is continued by the next append.

        `skipped_lines` are lines the reader skipped before `text` (counted, never held).
        """
        if not text and not skipped_lines:
            return
        self._start_text()
        self.dropped_lines += skipped_lines
        self._write(text.replace("\r\n", "\n"))

    def separator(self, title: str) -> None:
        """A line between attempts, so the previous attempt's output stays readable above."""
        self._start_text()
        if self._lines and self._lines[-1]:
            self._write("\n")
        self._write(f"── {title} ──\n")

    def _start_text(self) -> None:
        if not self._has_text:
            self.clear()
            self._has_text = True
            self.remove_class("-placeholder")

    def _write(self, text: str) -> None:
        if not text:
            return
        lines = self._lines
        parts = text.split("\n")
        if not lines:
            lines.append("")
        first = len(lines) - 1  # the first line that changed
        lines[-1] = _capped(lines[-1] + parts[0])
        lines.extend(_capped(part) for part in parts[1:])
        self._width = max(self._width, max(cell_len(_shown(line)) for line in lines[first:]))
        excess = self.line_count - self.max_lines
        if excess > 0:
            del lines[:excess]
            self.dropped_lines += excess
            if not self.auto_scroll:  # keep the lines being read where they are
                self.scroll_to(y=max(0, self.scroll_y - excess), animate=False, immediate=True)
        self._update_size()
        self.refresh()
        if self.auto_scroll:
            self.scroll_end(animate=False, immediate=True, x_axis=False)

    def _update_size(self) -> None:
        self.virtual_size = Size(self._width, self.line_count)

    # -- following -------------------------------------------------------------------------

    def set_following(self, following: bool) -> None:
        """Follow the end (scrolling there now) or stay where the view is as lines arrive."""
        if following != self.auto_scroll:
            self.auto_scroll = following
            self.post_message(self.FollowChanged(following))
        if following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)

    def action_scroll_up(self) -> None:
        self.set_following(False)
        super().action_scroll_up()

    def action_page_up(self) -> None:
        self.set_following(False)
        super().action_page_up()

    def action_scroll_home(self) -> None:
        self.set_following(False)
        super().action_scroll_home()

    def action_scroll_end(self) -> None:
        self.set_following(True)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        if self.max_scroll_y:
            self.set_following(False)

    # -- search ----------------------------------------------------------------------------

    @property
    def search_text(self) -> str:
        return self._query

    @property
    def current_match(self) -> int | None:
        """The index (in `lines`) of the match last jumped to, if still held."""
        if self._current_match is None:
            return None
        index = self._current_match - self.dropped_lines
        return index if 0 <= index < len(self._lines) else None

    def matches(self) -> list[int]:
        """Indexes of the held lines that contain the query (case-insensitive unless it has capitals)."""
        if not self._query:
            return []
        needle, fold = self._needle()
        return [i for i, line in enumerate(self._lines) if needle in (line.lower() if fold else line)]

    def set_query(self, query: str) -> None:
        """Highlight `query` everywhere (without moving); "" clears it."""
        self._query = query
        self._current_match = None
        self.refresh()

    def find(self, forward: bool = True, from_view: bool = False) -> int | None:
        """Jump to the next (or previous) line holding the query, wrapping around; None if none.

        From the current match, or from the top of the view when there is none or `from_view`.
        Jumping stops following, so new lines do not pull the match out of view.
        """
        found = self.matches()
        if not found:
            self._current_match = None
            self.refresh()
            return None
        current = None if from_view else self.current_match
        if current is None:
            start = int(self.scroll_y)
            after = [i for i in found if i >= start] if forward else [i for i in found if i < start]
        else:
            after = [i for i in found if i > current] if forward else [i for i in found if i < current]
        if forward:
            index = after[0] if after else found[0]
        else:
            index = after[-1] if after else found[-1]
        self._current_match = index + self.dropped_lines
        self.set_following(False)
        self._scroll_to_line(index)
        self.refresh()
        return index

    def _needle(self) -> tuple[str, bool]:
        fold = self._query == self._query.lower()  # smart case, as in vim and less
        return (self._query.lower() if fold else self._query), fold

    def _scroll_to_line(self, index: int) -> None:
        height = self.scrollable_content_region.height
        line = _shown(self._lines[index])
        needle, fold = self._needle()
        column = cell_len(line[: (line.lower() if fold else line).find(needle)])
        width = self.scrollable_content_region.width
        x = self.scroll_x
        if not (x <= column and column + len(needle) <= x + width):
            x = max(0, column - width // 2)
        self.scroll_to(x=x, y=max(0, index - height // 2), animate=False, immediate=True)

    # -- drawing ---------------------------------------------------------------------------

    @property
    def allow_select(self) -> bool:
        return True

    def get_selection(self, selection: Selection) -> tuple[str, str] | None:
        """The text under a mouse selection (copied with ctrl+c)."""
        return selection.extract("\n".join(self._lines)), "\n"

    def selection_updated(self, selection: Selection | None) -> None:
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        rich_style = self.rich_style
        if index >= len(self._lines):
            return Strip.blank(width, rich_style)
        line = _shown(self._lines[index])
        text = Text(line, no_wrap=True, style=rich_style)
        if self._query:
            current = self.current_match == index
            style = self.get_component_rich_style(
                "log-view--current-match" if current else "log-view--match", partial=True
            )
            needle, fold = self._needle()
            haystack = line.lower() if fold else line
            start = haystack.find(needle)
            while start >= 0:
                text.stylize(style, start, start + len(needle))
                start = haystack.find(needle, start + len(needle))
        selection = self.text_selection
        if selection is not None and (span := selection.get_span(index)) is not None:
            start, end = span
            text.stylize(
                self.screen.get_component_rich_style("screen--selection"),
                start,
                len(line) if end == -1 else end,
            )
        strip = Strip(text.render(self.app.console), cell_len(line))
        return strip.crop_extend(scroll_x, scroll_x + width, rich_style).apply_offsets(scroll_x, index)


def _capped(line: str) -> str:
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 1] + "…"
