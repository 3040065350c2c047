"""The store's files: one TinyDB database per file under `.aup/store/`, the cross-process lock,
journal appends and their durability (fdatasync after the lock is released), and id counters.

The records of each kind (resources, experiments, jobs, results, requests) are built on this;
`TinyDBConnector` (connector.py) puts them together.
"""

from __future__ import annotations

import fcntl
import fnmatch
import glob
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from tinydb import TinyDB
from tinydb.table import Table

from .files import (
    Signature,
    StoreCorruptError,
    StoreWriteError,
    WriteLock,
    is_write_error,
    open_db,
    storage_of,
    table,
)
from .process import ProcessId, current_process
from .schema import validate_document

log = logging.getLogger("aup_tui_backends.store")

JOBS_PER_SHARD = 32
RESULTS_PER_PART = 4096
JID_BLOCK = 64
FLUSH_INTERVAL = 0.5
COMPACT_IDLE = 10.0  # a journal not written for this long is folded into its snapshot in the background
OPEN_DBS = 32  # journals kept open for writing at once (every database read stays cached)


def _store_sync_setting(auppath: str) -> str:
    """env.ini's `store_sync` (job | batch); batch when absent or unreadable."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment]
    try:
        parser.read(os.path.join(auppath, "env.ini"))
    except (configparser.Error, UnicodeDecodeError):  # load_env names the damage; not ours to raise
        return "batch"
    return parser.get("Auptimizer", "store_sync", fallback="batch").strip().lower()


class StoreDatabase:
    """The files, locks and journal writes under every kind of record."""

    def __init__(self, auppath: str = ".aup", sync: str | None = None) -> None:
        """`sync`: "job" fdatasyncs every finished job before `end_job` returns; "batch" (the
        default, or env.ini's `store_sync`) hands it to the kernel at once — safe against a
        killed process — and fdatasyncs twice a second, so power loss costs at most that."""
        self.auppath = os.path.abspath(auppath)
        self.sync_each_job = (sync or _store_sync_setting(self.auppath)) == "job"
        self._dirty: dict[str, int] = {}  # journals written since the last batched fdatasync
        self.root = os.path.join(self.auppath, "store")
        os.makedirs(self.root, exist_ok=True)
        self._lock = threading.RLock()
        self._lockfd = os.open(
            os.path.join(self.auppath, "store.lock"), os.O_RDWR | os.O_CREAT, 0o666
        )  # umask
        self._flock_depth = 0
        self._write_lock = WriteLock()  # which hold of the flock is current (files.py)
        self._holds = 0
        self._released: set[int] = set()  # rids freed by us but still marked taken on disk
        self._to_sync: list[int] = []  # journal fds (dups) to fdatasync when the lock is released
        self._dbs: dict[str, TinyDB] = {}
        self._n_results = 0  # results databases in `_dbs`
        self.me: ProcessId = current_process()
        self._jid_pool: list[int] = []
        self._result_parts: dict[tuple[int, int], tuple[int, int]] = {}
        self._pending: list[tuple[int, int, dict[str, Any]]] = []  # (eid, shard, doc)
        self._live: set[tuple[int, int]] = set()  # (eid, jid) of our jobs started and not over
        self._pids: dict[tuple[int, int], tuple[int, int]] = {}  # (eid, jid) → (attempt, pid) to record
        self._pending_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._closed = threading.Event()
        #: finished jobs' records the file system refused, in order: (eid, jid) → (file, record)
        self._unwritten: dict[tuple[int, int], tuple[str, dict[str, Any]]] = {}
        #: why the store can't be written now (None: it can); cleared by the flusher's retry
        self.write_error: StoreWriteError | None = None
        #: the flusher's last failure other than a full disk (a damaged file, EACCES), None once
        #: a round succeeds: a run waiting for the store fails with it rather than wait forever
        self.flush_failure: Exception | None = None
        #: databases this connector appended to and not yet compacted → when last written
        self._written: dict[str, float] = {}
        self._jid_floor: int | None = None
        #: eid → (its job files' signatures, its job documents sorted by jid)
        self._jobs_memo: dict[int, tuple[list[tuple[str, Signature]], list[dict[str, Any]]]] = {}
        #: eid → (its job files' stamps, `status`' rows)
        self._rows_memo: dict[int, tuple[list[list[str | int]] | None, list[dict[str, Any]]]] = {}
        self._summaries_due: set[int] = set()  # experiments whose summary.json close() rewrites

    # -- files, locks, journal writes --------------------------------------------------------

    def _db(self, relpath: str) -> TinyDB:
        """The database for `relpath`. Job and experiment files stay cached once read (a re-read
        costs two stats: `status` at 10,000 jobs reads each once); of the intermediate results,
        which grow without bound, only the `OPEN_DBS` most recently used stay in memory. At most
        `OPEN_DBS` journals stay open for writing."""
        with self._lock:
            db = self._dbs.pop(relpath, None)
            if db is None:
                db = open_db(os.path.join(self.root, relpath), validate=validate_document)
                storage_of(db).write_lock = self._write_lock
                if "/results-" in relpath:
                    self._n_results += 1
                    if self._n_results > OPEN_DBS:
                        oldest = next(p for p in self._dbs if "/results-" in p)
                        self._dbs.pop(oldest).close()
                        self._n_results -= 1
            self._dbs[relpath] = db  # most recent last
            return db

    def _release_fds(self) -> None:
        holding = [db for db in self._dbs.values() if storage_of(db).holds_fd]
        for db in holding[: max(0, len(holding) - OPEN_DBS)]:
            storage_of(db).release_fd()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """In-process and cross-process exclusion for a read-modify-write.

        Durable writes are synced after the locks are released (but before this returns), so
        one thread's fdatasync never holds up another thread's write.
        """
        self._lock.acquire()
        to_sync: list[int] = []
        try:
            if self._flock_depth == 0:
                fcntl.flock(self._lockfd, fcntl.LOCK_EX)
                self._holds += 1
                self._write_lock.hold = self._holds
            self._flock_depth += 1
            try:
                yield
            finally:
                self._flock_depth -= 1
                if self._flock_depth == 0:
                    self._write_lock.hold = 0
                    fcntl.flock(self._lockfd, fcntl.LOCK_UN)
                    to_sync, self._to_sync = self._to_sync, []
        finally:
            self._lock.release()
            for fd in to_sync:
                try:
                    os.fdatasync(fd)
                except OSError as exc:  # EIO: the record may not be durable; say so, go on
                    log.warning("store: fdatasync failed: %s", exc)
                finally:
                    os.close(fd)

    def _write(self, relpath: str, ops: list[dict[str, Any]], sync: bool = False) -> None:
        """Append journal operations to one database file (caller holds `_locked`).

        `sync`: on disk before the outermost `_locked` block returns.
        """
        path = os.path.join(self.root, relpath)
        try:
            storage = storage_of(self._db(relpath))
            try:
                fd = storage.append(ops)
            except FileNotFoundError:  # the experiment's first write: its folder is made then
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fd = storage.append(ops)
        except StoreWriteError as exc:
            self.write_error = exc
            self._start_flusher()  # whatever write failed first (even a sync one), the flusher retries
            raise
        except OSError as exc:
            if not is_write_error(exc):
                raise
            self.write_error = StoreWriteError(path, exc)
            self._start_flusher()
            raise self.write_error from None
        if relpath not in self._written:
            self._release_fds()
            if "/jobs-" in relpath:
                self._summaries_due.add(int(relpath[1 : relpath.index("/")]))
        self._written[relpath] = time.monotonic()
        if sync and self.sync_each_job:
            self._to_sync.append(os.dup(fd))
        elif relpath not in self._dirty:
            self._dirty[relpath] = os.dup(fd)
            self._start_flusher()

    def sync(self) -> None:
        """fdatasync every journal written since the last call (the batched durability)."""
        with self._lock:
            dirty, self._dirty = self._dirty, {}
        for fd in dirty.values():
            try:
                os.fdatasync(fd)
            except OSError:
                pass  # a failing disk: the next write reports it
            finally:
                os.close(fd)

    def _raw(self, relpath: str, tbl: str) -> dict[str, dict[str, Any]]:
        """The table's documents as stored ({str(id): doc}); a hot-path read without TinyDB's
        per-document wrapping. Treat as read-only, under `self._lock`."""
        data = storage_of(self._db(relpath)).read()
        docs: dict[str, dict[str, Any]] = (data or {}).get(tbl, {})
        return docs

    def _put(self, relpath: str, tbl: str, doc_id: int, doc: dict[str, Any], sync: bool = False) -> None:
        self._write(relpath, [{"t": tbl, "id": str(doc_id), "d": doc}], sync)

    def _update(
        self,
        relpath: str,
        tbl: str,
        doc_id: int,
        fields: dict[str, Any],
        drop: Iterable[str] = (),
        sync: bool = False,
    ) -> None:
        """Set `fields` of a document (and remove the keys `drop`): a journal line of the change only."""
        op: dict[str, Any] = {"t": tbl, "id": str(doc_id), "u": fields}
        if drop:
            op["r"] = list(drop)
        self._write(relpath, [op], sync)

    def _patch(
        self, relpath: str, tbl: str, doc_ids: list[int], fields: dict[str, Any], sync: bool = False
    ) -> None:
        docs = self._raw(relpath, tbl)
        ops = []
        for doc_id in doc_ids:
            doc = docs.get(str(doc_id))
            if doc is not None:
                ops.append({"t": tbl, "id": str(doc_id), "u": fields})
        if ops:
            self._write(relpath, ops, sync)

    def _delete(self, relpath: str, tbl: str, doc_ids: list[int]) -> None:
        if doc_ids:
            self._write(relpath, [{"t": tbl, "id": str(i), "x": 1} for i in doc_ids])

    META = "meta.json"

    def _meta(self, name: str) -> Table:
        return table(self._db(self.META), name)

    @staticmethod
    def _exp_file(eid: int) -> str:
        return f"e{eid}/experiment.json"

    @staticmethod
    def _jobs_file(eid: int, jid: int) -> str:
        return f"e{eid}/jobs-{jid // JOBS_PER_SHARD}.json"

    def _exp(self, eid: int, name: str) -> Table:
        return table(self._db(self._exp_file(eid)), name)

    def _jobs(self, eid: int, jid: int) -> Table:
        return table(self._db(self._jobs_file(eid, jid)), "jobs")

    def _files(self, pattern: str) -> list[str]:
        """Databases matching `pattern` (`dir/name`, relative to the store), whether snapshot or
        journal exists; a listdir per folder (no glob, no relpath: this runs on every refresh)."""
        folder, name = pattern.split("/", 1)
        folders = (
            [folder]
            if not glob.has_magic(folder)
            else [f for f in fnmatch.filter(self._listdir(self.root), folder)]
        )
        found: set[str] = set()
        for f in folders:
            names = {n.removesuffix(".log") for n in self._listdir(os.path.join(self.root, f))}
            found.update(f"{f}/{n}" for n in fnmatch.filter(names, name))
        return sorted(found)

    @staticmethod
    def _listdir(path: str) -> list[str]:
        try:
            return os.listdir(path)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _job_files(self, eid: int) -> list[str]:
        return self._files(f"e{eid}/jobs-*.json")

    def _result_files(self, eid: int, shard: int) -> list[str]:
        return self._files(f"e{eid}/results-{shard}-*.json")

    def _next_id(self, counter: str, count: int = 1) -> int:
        """Reserve `count` ids of `counter` (caller holds `_locked`); returns the first.

        Never lower than an id already in the tables, so a lost or damaged meta.json cannot make
        ids start again and overwrite experiment 1."""
        doc = self._raw(self.META, "counters").get("1") or {}
        first = max(int(doc.get(counter, 0)), self._id_floor(counter)) + 1
        self._put(self.META, "counters", 1, {**doc, counter: first + count - 1})
        return first

    def _eids_on_disk(self) -> set[int]:
        return {int(n[1:]) for n in self._listdir(self.root) if re.fullmatch(r"e[0-9]+", n)}

    def _id_floor(self, counter: str) -> int:
        """The highest id of `counter` found in the tables themselves."""
        if counter == "eid":
            return max(self._eids_on_disk() | set(map(int, self._raw(self.META, "experiments"))), default=0)
        if counter == "jid":
            if self._jid_floor is None:  # jobs-<n>.json holds jids n*32 … n*32+31: names suffice
                shards = [
                    int(m.group(1))
                    for p in glob.glob(os.path.join(self.root, "e*", "jobs-*.json*"))
                    if (m := re.search(r"jobs-([0-9]+)\.json", os.path.basename(p)))
                ]
                self._jid_floor = max(((n + 1) * JOBS_PER_SHARD - 1 for n in shards), default=0)
            return self._jid_floor
        if counter == "rid":
            return max(map(int, self._defs()), default=0)
        tbl = {"stop": "stops"}.get(counter, counter)
        return max(map(int, self._raw(self.META, tbl)), default=0)

    def _move_aside(self, exc: StoreCorruptError) -> None:
        """Set a damaged file aside (kept for the person) and say so once, on stderr."""
        aside = f"{exc.path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            os.replace(exc.path, aside)
        except OSError:
            raise exc from None
        what = "env.ini" if self.RESOURCES in exc.path else "the experiment folders"
        log.warning(
            "aup-tui: %s was damaged (%s); moved it to %s and rebuilt what it held from %s",
            exc.path,
            str(exc).split("(", 1)[1].split(")")[0],
            aside,
            what,
        )

    # -- resource definitions (resources.json; see resources.py) -----------------------------

    RESOURCES = "resources.json"

    def _defs(self) -> dict[str, dict[str, Any]]:
        """The resource definitions ({str(rid): {rid, name, type}}; caller holds `_lock`). A
        damaged resources.json is moved aside: it is rebuilt from env.ini by the next sync."""
        try:
            return self._raw(self.RESOURCES, "resources")
        except StoreCorruptError as exc:
            self._move_aside(exc)
            return self._raw(self.RESOURCES, "resources")

    def _start_flusher(self) -> None:
        if self._flusher is None and not self._closed.is_set():
            with self._pending_lock:
                if self._flusher is None:
                    self._flusher = threading.Thread(
                        target=self._flush_loop, name="aup-store-flush", daemon=True
                    )
                    self._flusher.start()

    def _flush_loop(self) -> None:
        """The flusher thread's body (see `TinyDBConnector`)."""
        raise NotImplementedError
