"""TinyDB storage with a write-ahead journal: O(1) writes, no corrupt file after kill -9.

TinyDB's JSONStorage rewrites the whole file on every change. Here a database is a snapshot
(`name.json`, TinyDB's own format, replaced atomically) plus a journal (`name.json.log`, one
JSON operation a line, appended). Readers replay the journal over the snapshot, re-reading only
the bytes appended since their last read, so another process's writes show up cheaply. When the
journal outgrows the snapshot it is folded into a new snapshot (compaction).

Journal operations set final values: put a document (`d`), update some of its fields (`u`, and
`r` for keys it loses: a finished job's record is a few fields, not the whole document), delete
one (`x`), clear a table; so replaying a journal that a crash left behind after its compaction is
harmless. Stores written before updates existed read the same. A torn last line (power loss
in the middle of an append) is ignored by readers and cut off by the next writer.

A write that the file system refuses (disk full, I/O error, quota) raises `StoreWriteError` and
leaves the journal cut back to its last complete line, never a torn middle; a file that cannot be
parsed raises `StoreCorruptError` naming it. Files are created 0o666 and left to the umask.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Table

from ..errors import AupError

COMPACT_MIN_BYTES = 64 * 1024

#: errors that mean "no room or a failing disk": writes wait and are retried, nothing is dropped
WRITE_ERRNOS = frozenset(
    e
    for e in (errno.ENOSPC, errno.EIO, getattr(errno, "EDQUOT", None), errno.EROFS, errno.EFBIG)
    if e is not None
)


class StoreWriteError(AupError):
    """The store's file system refused a write (ENOSPC, EIO, EDQUOT, EROFS): retry when it has room."""

    def __init__(self, path: str, exc: OSError) -> None:
        self.path = path
        self.errno = exc.errno
        self.strerror = exc.strerror or str(exc)
        super().__init__(f"store can't be written: {self.strerror} on {path} — free space there and retry")


class StoreCorruptError(AupError):
    """A store file that cannot be parsed: one message naming it and what to do."""

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        super().__init__(
            f"store file {path} is damaged ({what}): move it aside "
            f"(mv {path} {path}.damaged) and run the command again — "
            "the rest of the store is kept"
        )


def is_write_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS


def write_all(fd: int, data: bytes) -> None:
    """`os.write` until every byte is written (a short write is not an error)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - write(2) returns >0 or raises
            raise OSError(errno.EIO, "write returned 0")
        view = view[n:]


def _check_op(op: Any) -> dict[str, Any]:
    if not (
        isinstance(op, dict)
        and isinstance(op.get("t"), str)
        and isinstance(op.get("id", ""), str)
        and ("id" in op or op.get("clear"))
        and ("d" not in op or isinstance(op["d"], dict))
        and ("u" not in op or isinstance(op["u"], dict))
        and ("r" not in op or (isinstance(op["r"], list) and all(isinstance(k, str) for k in op["r"])))
    ):
        raise ValueError("a journal line is not an operation")
    return op


def _check_snapshot(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict) or not all(
        isinstance(t, dict) and all(isinstance(d, dict) for d in t.values()) for t in data.values()
    ):
        raise ValueError("not a TinyDB database")
    return data


def _sig(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def apply_op(data: dict[str, dict[str, Any]], op: dict[str, Any]) -> dict[str, Any] | None:
    """Apply one journal operation to TinyDB's in-memory layout {table: {id: doc}}; returns the
    document an update made (None for any other operation, or an update of a missing one)."""
    table = data.setdefault(op["t"], {})
    if "d" in op:
        table[op["id"]] = op["d"]
    elif "u" in op:
        doc = table.get(op["id"])
        if doc is not None:  # a new document (never changed in place: readers may hold the old)
            new = {**doc, **op["u"]}
            for key in op.get("r", ()):
                new.pop(key, None)
            table[op["id"]] = new
            return new
    elif op.get("x"):
        table.pop(op["id"], None)
    elif op.get("clear"):
        table.clear()
    return None


class WriteLock:
    """Which hold of the store's cross-process write lock is current (0: this process does not
    hold it). While it is held nobody else can write, so a database checked on disk once during
    a hold is not stat'ed again until the next one."""

    __slots__ = ("hold",)

    def __init__(self) -> None:
        self.hold = 0


class JournaledStorage(Storage):
    """A TinyDB `Storage`: `read()` = snapshot + journal; `append(ops)` is the fast write path."""

    def __init__(self, path: str, validate: Callable[[str, str, dict[str, Any]], None] | None = None) -> None:
        """`validate(table, doc_id, doc)` checks each document as it is read and raises
        ValueError for a damaged one, so that damage is reported here, naming the file."""
        self.path = path
        self.validate = validate
        self.log_path = path + ".log"
        self._mutex = threading.RLock()
        self._data: dict[str, dict[str, Any]] | None = None
        self._snap: tuple[int, int, int] | None = None
        self._log_ino: int | None = None
        self._log_off = 0
        self._fd: int | None = None
        #: the store's write lock (set by the connector), and the hold during which this file
        #: was last checked on disk; `_torn`: the journal then ended in an incomplete line
        self.write_lock: WriteLock | None = None
        self._checked_hold = 0
        self._torn = False

    # -- reading --------------------------------------------------------------------------

    def read(self) -> dict[str, Any] | None:
        with self._mutex:
            lock = self.write_lock
            if lock is not None and lock.hold and lock.hold == self._checked_hold and self._data is not None:
                # checked during this hold of the write lock: only we can have written since
                exists = self._data or self._snap is not None or self._log_ino is not None
                return self._data if exists else None
            snap = _sig(self.path)
            try:
                st = os.stat(self.log_path)
                log_ino, log_size = st.st_ino, st.st_size
            except FileNotFoundError:
                log_ino, log_size = None, 0
            if (
                self._data is None
                or snap != self._snap
                or log_ino != self._log_ino
                or log_size < self._log_off
            ):
                self._data = self._load_snapshot() if snap else {}
                self._snap, self._log_ino, self._log_off = snap, log_ino, 0
            if log_size > self._log_off:
                self._replay(log_size)
            self._torn = log_size > self._log_off
            if lock is not None and lock.hold:
                self._checked_hold = lock.hold
            if snap is None and log_ino is None and not self._data:
                return None
            return self._data

    def _load_snapshot(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:  # replaced or removed since we looked
            return {}
        try:
            data = _check_snapshot(json.loads(raw)) if raw.strip() else {}
            if self.validate is not None:
                for tbl, docs in data.items():
                    for doc_id, doc in docs.items():
                        self.validate(tbl, doc_id, doc)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            self._data = None
            raise StoreCorruptError(self.path, _what(exc)) from None
        return data

    def _replay(self, size: int) -> None:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_off)
                chunk = f.read(size - self._log_off)
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1  # a torn last line waits (or is cut by the next writer)
        ops = []
        try:
            for line in chunk[:end].splitlines():
                if line:
                    op = _check_op(json.loads(line))
                    if self.validate is not None and "d" in op:
                        self.validate(op["t"], op["id"], op["d"])
                    ops.append(op)
        except ValueError as exc:
            self._data = None  # re-read from the start next time: never half a replay
            raise StoreCorruptError(self.log_path, _what(exc)) from None
        data = self._data
        assert data is not None  # `read` loaded the snapshot before replaying the journal
        try:
            for op in ops:
                new = apply_op(data, op)
                if new is not None and self.validate is not None:
                    self.validate(op["t"], op["id"], new)
        except ValueError as exc:
            self._data = None  # never half a replay
            raise StoreCorruptError(self.log_path, _what(exc)) from None
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
            try:
                fd = self._journal_fd()
                lock = self.write_lock
                if lock is not None and lock.hold and lock.hold == self._checked_hold:
                    torn = self._torn  # as `read` found it during this hold
                else:
                    torn = os.fstat(fd).st_size != self._log_off
                if torn:  # a torn tail from a crashed writer: drop it
                    os.ftruncate(fd, self._log_off)
                    self._torn = False
                write_all(fd, payload)
            except OSError as exc:
                if self._fd is not None:
                    try:  # never leave half an append behind
                        os.ftruncate(self._fd, self._log_off)
                    except OSError:
                        pass  # readers ignore a torn last line; the next append cuts it
                if is_write_error(exc):
                    raise StoreWriteError(self.log_path, exc) from None
                raise
            data = self._data
            assert data is not None  # `read` above loaded it
            for op in ops:
                apply_op(data, op)
            self._log_off += len(payload)
            if self._log_off > max(COMPACT_MIN_BYTES, 2 * (self._snap[2] if self._snap else 0)):
                try:
                    self._compact(sync=True)
                except StoreWriteError:
                    pass  # the journal holds the data; compaction waits for room
            return fd

    def write(self, data: dict[str, Any]) -> None:
        """TinyDB's own write path (whole database): becomes a compaction."""
        with self._mutex:
            self._data = data
            self._compact(sync=False)

    def compact(self) -> None:
        """Fold a non-empty journal into the snapshot (caller holds the store's write lock).

        Durably (fsync the snapshot and its folder before the journal is cut): the journal may
        hold records that were fdatasync'ed already (finished jobs), and a truncate reaching the
        disk before the snapshot's data would lose them on power loss. This runs off the hot
        path (idle journals, close), so the fsyncs cost nobody a wait."""
        compact_many([self])

    def _compact(self, sync: bool) -> None:
        tmp = self._write_snapshot(sync)
        self._install_snapshot(tmp)
        if sync:  # the rename itself on disk before the journal is cut
            _fsync_dir(os.path.dirname(self.path))
        self._cut_journal()

    def _write_snapshot(self, sync: bool) -> str:
        """The data as read so far, in a temporary file beside the snapshot (fsync'ed if `sync`)."""
        with self._mutex:
            data = self._data if self._data is not None else (self.read() or {})
            payload = json.dumps(data, separators=(",", ":")).encode()
        tmp = f"{self.path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(payload)
                f.flush()
                if sync:
                    os.fsync(f.fileno())
        except BaseException as exc:
            self._discard(tmp)
            if is_write_error(exc):
                raise StoreWriteError(self.path, exc) from None  # type: ignore[arg-type]
            raise
        return tmp

    def _install_snapshot(self, tmp: str) -> None:
        try:
            os.replace(tmp, self.path)
        except BaseException as exc:
            self._discard(tmp)
            if is_write_error(exc):
                raise StoreWriteError(self.path, exc) from None  # type: ignore[arg-type]
            raise

    def _discard(self, tmp: str) -> None:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        with self._mutex:
            self._data = None

    def _cut_journal(self) -> None:
        """Empty the journal now that the snapshot holds it. Not fsync'ed: should the cut not
        reach the disk, the journal's operations (which set final values) replay harmlessly
        over the snapshot; and the next fdatasync of an append carries the cut with it."""
        with self._mutex:
            fd = self._journal_fd()
            os.ftruncate(fd, 0)
            self._snap = _sig(self.path)
            self._log_ino, self._log_off, self._torn = os.fstat(fd).st_ino, 0, False

    def _journal_fd(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(
                    self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666
                )  # umask applies
            except OSError as exc:
                if is_write_error(exc):
                    raise StoreWriteError(self.log_path, exc) from None
                raise
            self._log_ino = os.fstat(self._fd).st_ino
        return self._fd

    def release_fd(self) -> None:
        """Close the journal's fd but keep what was read (the next append reopens it)."""
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    @property
    def signature(self) -> Signature:
        """Changes whenever what `read()` returns may have changed (call `read()` first)."""
        return (self._snap, self._log_ino, self._log_off, id(self._data))

    @property
    def holds_fd(self) -> bool:
        return self._fd is not None

    @property
    def journal_bytes(self) -> int:
        """Bytes of journal read so far (0 after a compaction)."""
        return self._log_off

    def close(self) -> None:
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._data = None


def compact_many(storages: list[JournaledStorage], threads: int = 1) -> None:
    """Fold the journals of `storages` (those that hold data) into their snapshots, durably, with
    one fsync a snapshot and one a folder: every snapshot is written and fsync'ed (in `threads`
    threads: mostly waiting on the disk), then renamed, then each folder fsync'ed once, and
    only then is any journal cut (caller holds the store's write lock)."""
    due = []
    for storage in storages:
        with storage._mutex:
            storage.read()
            if storage._log_off:
                due.append(storage)
    if not due:
        return
    if threads > 1 and len(due) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads, thread_name_prefix="aup-store-compact") as pool:
            futures = [pool.submit(st._write_snapshot, True) for st in due]
        tmps = [f.result() if f.exception() is None else f.exception() for f in futures]
    else:
        tmps = []
        for st in due:
            try:
                tmps.append(st._write_snapshot(True))
            except BaseException as exc:  # noqa: BLE001 -- raised below, after the others are cleaned
                tmps.append(exc)
    failure = next((t for t in tmps if isinstance(t, BaseException)), None)
    if failure is not None:
        for st, tmp in zip(due, tmps):
            if isinstance(tmp, str):
                st._discard(tmp)
        raise failure
    for st, tmp in zip(due, tmps):
        st._install_snapshot(tmp)  # type: ignore[arg-type]
    for folder in sorted({os.path.dirname(st.path) for st in due}):
        _fsync_dir(folder)
    for st in due:
        st._cut_journal()


def compact_aside(storage: JournaledStorage, locked: Callable[[], AbstractContextManager[Any]]) -> bool:
    """Fold one journal in the background holding the store's write lock (`locked()`) only to
    copy the data, to rename and to cut: the fsyncs run outside it, so no job's start or end
    waits on the disk for a compaction. Returns False when the journal grew meanwhile: it is
    kept (its operations replay harmlessly over the new snapshot) and folded later."""
    with locked(), storage._mutex:
        storage.read()
        if not storage._log_off:
            return True
        covered = (storage._log_ino, storage._log_off)
        tmp = storage._write_snapshot(False)
    try:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if is_write_error(exc):
            raise StoreWriteError(storage.path, exc) from None
        raise
    with locked(), storage._mutex:
        storage.read()
        if (storage._log_ino, storage._log_off) != covered:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return False
        storage._install_snapshot(tmp)
        storage._snap = _sig(storage.path)  # what we hold is what it holds: no reload
    _fsync_dir(os.path.dirname(storage.path))  # the rename on disk before the journal is cut
    with locked(), storage._mutex:
        storage.read()
        if (storage._log_ino, storage._log_off) != covered:
            return False
        storage._cut_journal()
    return True


def _fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _what(exc: ValueError) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


#: a journaled file's state as `JournaledStorage.signature` gives it
Signature = tuple[tuple[int, int, int] | None, int | None, int, int]


def open_db(path: str, validate: Callable[[str, str, dict[str, Any]], None] | None = None) -> TinyDB:
    """A TinyDB on `path` through the journaled storage."""
    return TinyDB(path, storage=JournaledStorage, validate=validate)


def table(db: TinyDB, name: str) -> Table:
    """A table without TinyDB's query cache (another process may have changed the file)."""
    return db.table(name, cache_size=0)


def storage_of(db: TinyDB) -> JournaledStorage:
    return db.storage  # type: ignore[return-value]
