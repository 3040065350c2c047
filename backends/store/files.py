"""TinyDB storage that survives kill -9 and sees other processes' writes.

Every write goes to a temporary file that replaces the old one atomically, so a reader (or a
crash) only ever sees a whole file. Reads re-parse the file only when its stat signature
changed, which is how a process notices another process's writes without paying for a parse
on every query.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class AtomicJSONStorage(Storage):
    """A TinyDB storage: atomic replace on write, stat-checked cache on read.

    Set `durable` to make the next writes fsync the file and its folder before returning.
    """

    def __init__(self, path: str, durable: bool = False) -> None:
        self.path = path
        self.durable = durable
        self._cache: dict[str, Any] | None = None
        self._sig: tuple[int, int, int] | None = None

    def read(self) -> dict[str, Any] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._cache, self._sig = None, None
            return None
        sig = _signature(st)
        if sig != self._sig or self._cache is None:
            with open(self.path, "rb") as f:
                raw = f.read()
            self._cache = json.loads(raw) if raw.strip() else {}
            self._sig = sig
        return self._cache

    def write(self, data: dict[str, Any]) -> None:
        payload = json.dumps(data, separators=(",", ":"), allow_nan=True).encode()
        tmp = f"{self.path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(payload)
                if self.durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            self._cache, self._sig = None, None
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        if self.durable:
            fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._cache = data
        self._sig = _signature(os.stat(self.path))

    def close(self) -> None:
        self._cache = None


def open_db(path: str) -> TinyDB:
    """A TinyDB on `path` with atomic, cache-checked storage and no stale query caches."""
    db = TinyDB(path, storage=AtomicJSONStorage)
    db.default_table_name = "_default"
    return db


def table(db: TinyDB, name: str):
    """A table without TinyDB's query cache (another process may have changed the file)."""
    return db.table(name, cache_size=0)


def storage_of(db: TinyDB) -> AtomicJSONStorage:
    return db.storage  # type: ignore[return-value]
