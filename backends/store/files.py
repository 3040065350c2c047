"""TinyDB storage with a write-ahead journal: O(1) writes, no corrupt file after kill -9.

TinyDB's JSONStorage rewrites the whole file on every change. Here a database is a snapshot
(`name.json`, TinyDB's own format, replaced atomically) plus a journal (`name.json.log`, one
JSON operation a line, appended). Readers replay the journal over the snapshot, re-reading only
the bytes appended since their last read, so another process's writes show up cheaply. When the
journal outgrows the snapshot it is folded into a new snapshot (compaction).

Journal operations set a document's final value (put / delete / clear a table), so replaying a
journal that a crash left behind after its compaction is harmless. A torn last line (power loss
in the middle of an append) is ignored by readers and cut off by the next writer.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Iterable

from tinydb import TinyDB
from tinydb.storages import Storage

COMPACT_MIN_BYTES = 64 * 1024


def _sig(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def apply_op(data: dict[str, dict[str, Any]], op: dict[str, Any]) -> None:
    """Apply one journal operation to TinyDB's in-memory layout {table: {id: doc}}."""
    table = data.setdefault(op["t"], {})
    if "d" in op:
        table[op["id"]] = op["d"]
    elif op.get("x"):
        table.pop(op["id"], None)
    elif op.get("clear"):
        table.clear()


class JournaledStorage(Storage):
    """A TinyDB `Storage`: `read()` = snapshot + journal; `append(ops)` is the fast write path."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.log_path = path + ".log"
        self._mutex = threading.RLock()
        self._data: dict[str, dict[str, Any]] | None = None
        self._snap: tuple[int, int, int] | None = None
        self._log_ino: int | None = None
        self._log_off = 0
        self._fd: int | None = None

    # -- reading --------------------------------------------------------------------------

    def read(self) -> dict[str, Any] | None:
        with self._mutex:
            snap = _sig(self.path)
            try:
                st = os.stat(self.log_path)
                log_ino, log_size = st.st_ino, st.st_size
            except FileNotFoundError:
                log_ino, log_size = None, 0
            if (self._data is None or snap != self._snap or log_ino != self._log_ino
                    or log_size < self._log_off):
                self._data = self._load_snapshot() if snap else {}
                self._snap, self._log_ino, self._log_off = snap, log_ino, 0
            if log_size > self._log_off:
                self._replay(log_size)
            if snap is None and log_ino is None and not self._data:
                return None
            return self._data

    def _load_snapshot(self) -> dict[str, Any]:
        with open(self.path, "rb") as f:
            raw = f.read()
        return json.loads(raw) if raw.strip() else {}

    def _replay(self, size: int) -> None:
        with open(self.log_path, "rb") as f:
            f.seek(self._log_off)
            chunk = f.read(size - self._log_off)
        end = chunk.rfind(b"\n") + 1  # a torn last line waits (or is cut by the next writer)
        for line in chunk[:end].splitlines():
            if line:
                apply_op(self._data, json.loads(line))
        self._log_off += end

    # -- writing --------------------------------------------------------------------------

    def append(self, ops: Iterable[dict[str, Any]]) -> int:
        """Append operations to the journal (caller holds the store's write lock).

        Returns the journal's fd: the caller fdatasyncs it when (and as often as) it needs to.
        """
        with self._mutex:
            self.read()
            ops = list(ops)
            payload = "".join(json.dumps(op, separators=(",", ":")) + "\n" for op in ops).encode()
            fd = self._journal_fd()
            size = os.fstat(fd).st_size
            if size != self._log_off:  # a torn tail from a crashed writer: drop it
                os.ftruncate(fd, self._log_off)
            os.write(fd, payload)
            for op in ops:
                apply_op(self._data, op)
            self._log_off += len(payload)
            if self._log_off > max(COMPACT_MIN_BYTES, 2 * (self._snap[2] if self._snap else 0)):
                self._compact(sync=True)
            return fd

    def write(self, data: dict[str, Any]) -> None:
        """TinyDB's own write path (whole database): becomes a compaction."""
        with self._mutex:
            self._data = data
            self._compact(sync=False)

    def compact(self) -> None:
        """Fold a non-empty journal into the snapshot (caller holds the store's write lock)."""
        with self._mutex:
            self.read()
            if self._log_off:
                self._compact(sync=False)

    def _compact(self, sync: bool) -> None:
        payload = json.dumps(self._data, separators=(",", ":")).encode()
        tmp = f"{self.path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(payload)
                if sync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            self._data = None
            raise
        fd = self._journal_fd()
        os.ftruncate(fd, 0)
        if sync:
            os.fsync(fd)
        self._snap = _sig(self.path)
        self._log_ino, self._log_off = os.fstat(fd).st_ino, 0

    def _journal_fd(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._log_ino = os.fstat(self._fd).st_ino
        return self._fd

    def close(self) -> None:
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._data = None


def open_db(path: str) -> TinyDB:
    """A TinyDB on `path` through the journaled storage."""
    return TinyDB(path, storage=JournaledStorage)


def table(db: TinyDB, name: str):
    """A table without TinyDB's query cache (another process may have changed the file)."""
    return db.table(name, cache_size=0)


def storage_of(db: TinyDB) -> JournaledStorage:
    return db.storage  # type: ignore[return-value]
