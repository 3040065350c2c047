"""Following a job's log file: `FileTail` reads (in a worker thread), `LogView` shows.

`FileTail` knows nothing of Textual so the reading can run anywhere; `LogView` is a `Log`
(Line API: cheap however long the log gets) that is handed text and never touches the disk.
"""

from __future__ import annotations

import codecs
import os

from textual.widgets import Log

#: How much of an existing log is shown on open; older output is skipped with a marker.
INITIAL_BYTES = 64 * 1024
#: Most bytes taken in one read: a job that floods its log is followed by skipping, not lagging.
MAX_READ_BYTES = 256 * 1024


class FileTail:
    """What a growing file gained since the last read, decoded as UTF-8.

    The first read shows only the last `initial_bytes` (starting at a line boundary), a read
    never takes more than `max_read` bytes (skipping ahead with a marker), a UTF-8 character
    split across reads is decoded whole, and a truncated or replaced file is read again from
    its start. A partial last line is returned as it is: `LogView` completes it on the next read.
    """

    def __init__(self, path: str, initial_bytes: int = INITIAL_BYTES, max_read: int = MAX_READ_BYTES) -> None:
        self.path = path
        self.initial_bytes = initial_bytes
        self.max_read = max(max_read, initial_bytes)
        self.offset: int | None = None  # None until the file was first seen
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
                    limit = self.initial_bytes
                else:
                    limit = self.max_read
                pending = size - self.offset
                if pending <= 0:
                    return prefix
                skip_to_line = False
                if pending > limit:
                    skipped = pending - limit
                    prefix += f"… {_size(skipped)} of earlier output not shown …\n"
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
        return prefix + self._decoder.decode(data)

    def flush(self) -> str:
        """Whatever an unfinished UTF-8 sequence at the end holds (call once the file is complete)."""
        return self._decoder.decode(b"", final=True)


def _size(n: int) -> str:
    return f"{n / 1024:.0f} KB" if n < 1024 * 1024 else f"{n / (1024 * 1024):.1f} MB"


class LogView(Log):
    """A job's output as it grows; keeps the last `max_lines` lines and follows the end."""

    def __init__(
        self,
        *,
        max_lines: int = 5000,
        placeholder: str = "",
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(max_lines=max_lines, auto_scroll=True, name=name, id=id, classes=classes)
        self.placeholder = placeholder
        self._has_text = False

    def on_mount(self) -> None:
        if self.placeholder:
            self.show_placeholder(self.placeholder)

    def on_resize(self) -> None:
        # Log only scrolls on write; a follower that shrank (the screen filled in above it)
        # must still show the newest line.
        if self.auto_scroll:
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True)

    def show_placeholder(self, message: str) -> None:
        """Show `message` (e.g. "no output yet") until text arrives."""
        self.clear()
        self._has_text = False
        self.write(message)
        self.add_class("-placeholder")

    def append(self, text: str) -> None:
        """Add text read from the log; a partial last line is continued by the next append."""
        if not text:
            return
        if not self._has_text:
            self.clear()
            self._has_text = True
            self.remove_class("-placeholder")
        self.write(text.replace("\r\n", "\n"))

    def separator(self, title: str) -> None:
        """A line between attempts, so the previous attempt's output stays readable above."""
        if not self._has_text:
            self.clear()
            self._has_text = True
            self.remove_class("-placeholder")
        elif self._lines and self._lines[-1]:
            self.write("\n")
        self.write(f"── {title} ──\n")
