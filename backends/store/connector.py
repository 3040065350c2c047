"""The store connector: resources, experiments, jobs and results in TinyDB files under `.aup/`.

Each file is a TinyDB database written through a journal (see `files.py`), so a write costs
an append, not a rewrite; and nothing that grows with history shares one file.
`.aup/store/` holds:

- `meta.json`: experiments, id counters, who holds which resource, stop requests, passive
  answers, the env.ini sync stamp (small);
- `resources.json`: the resources env.ini lists (rid, name, type), rewritten only when it changes;
- `e<eid>/experiment.json`: the experiment's config, result labels, error messages and a copy of
  its meta.json record (meta.json is rebuilt from these when lost);
- `e<eid>/summary.json`: the columns `status` shows, written when a run's store closes, used
  while it matches the job files (a checksummed cache, never the truth);
- `e<eid>/jobs-<n>.json`: jobs `n*32 … n*32+31`;
- `e<eid>/results-<n>-<part>.json`: intermediate results of those jobs, at most 4,096 a file.

One cross-process lock (`.aup/store.lock`) serialises writers; readers need none, since a
snapshot is replaced atomically and a journal line is applied only once complete. A finished
job's record is fdatasync'ed before `end_job` returns; intermediate results are buffered and
flushed every half second.

When the file system refuses a write (disk full, I/O error: `StoreWriteError`), nothing is
dropped: finished jobs' records wait in memory (`pending_records`), `write_error` says why, no
new job may start, and the flusher retries until they are written. Ids never go backwards even
if `meta.json` is lost (they are never lower than any id found in the `e<eid>/` folders), and
`meta.json`'s experiments can be rebuilt from `e<eid>/experiment.json`, which mirrors them.
"""

from __future__ import annotations

import fcntl
import fnmatch
import getpass
import glob
import json
import logging
import os
import re
import socket
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from tinydb import Query

from .files import StoreCorruptError, StoreWriteError, open_db, storage_of, table
from .process import ProcessId, current_process, is_alive

log = logging.getLogger("aup_tui_backends.store")

JOBS_PER_SHARD = 32
RESULTS_PER_PART = 4096
JID_BLOCK = 64
FLUSH_INTERVAL = 0.5
COMPACT_IDLE = 10.0  # a journal not written for this long is folded into its snapshot in the background
OPEN_DBS = 32  # journals kept open for writing at once (every database read stays cached)

#: Job states that are not over yet; the others (FINISHED, FAILED, STOPPED, EARLY_STOPPED,
#: INTERRUPTED) are final.
LIVE_STATES = ("RUNNING", "WAITING")


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


def _owner_alive(owner: list | None) -> bool:
    return bool(owner) and is_alive(ProcessId(*owner))


def better(
    score: float, end: float | None, jid: int, than: tuple[float, float | None, int] | None, maximize: bool
) -> bool:
    """The one rule for "best job": the higher (lower when minimizing) score wins; on a tie the
    job that FINISHED first (earliest end time) wins, then the lower jid. `than` is the current
    best as `(score, end, jid)` (None: anything is better)."""
    if than is None:
        return True
    if score != than[0]:
        return score > than[0] if maximize else score < than[0]
    mine, theirs = (
        (end if end is not None else float("inf")),
        (than[1] if than[1] is not None else float("inf")),
    )
    return (mine, jid) < (theirs, than[2])


# -- what a document of each table must look like (a damaged one is reported, not trusted) -----

_INT, _STR, _NONE = frozenset({int}), frozenset({str}), type(None)
_NUM = frozenset({int, float})
_OWNER = frozenset({list, _NONE})
#: table → ((key, the exact types its value may have), …); checked on every document read
_SPEC: dict[str, dict[str, frozenset]] = {
    "resources": {"rid": _INT, "name": _STR, "type": _STR},
    "taken": {"rid": _INT, "owner": frozenset({list})},
    "experiments": {"eid": _INT, "name": _STR, "status": _STR, "owner": _OWNER},
    "experiment": {"eid": _INT, "name": _STR, "status": _STR, "owner": _OWNER},
    "stops": {"eid": _INT, "time": _NUM},
    "passive": {"eid": _INT, "jid": _INT, "text": _STR, "time": _NUM},
    "jobs": {
        "jid": _INT,
        "eid": _INT,
        "status": _STR,
        "config": frozenset({dict}),
        "attempts": frozenset({list}),
        "score": frozenset({int, float, _NONE}),
        "resource": frozenset({str, _NONE}),
    },
    "results": {"jid": _INT, "index": _INT, "values": frozenset({list})},
    "config": {"config": frozenset({dict})},
    "labels": {"labels": frozenset({list})},
    "errors": {"message": _STR},
}
_SCHEMA: dict[str, tuple[tuple[str, frozenset], ...]] = {
    tbl: tuple(spec.items()) for tbl, spec in _SPEC.items()
}
_ID_KEYS = {"resources": "rid", "taken": "rid", "experiments": "eid", "jobs": "jid"}
_STATUS = re.compile(r"[A-Za-z_]{1,32}")


def _validate(tbl: str, doc_id: str, doc: dict[str, Any]) -> None:
    """Raise ValueError when `doc` (of table `tbl`) is not what this store writes: damage is
    found where the file is read and named, instead of surfacing as a KeyError somewhere else."""
    if not doc_id.isdigit():
        raise ValueError(f"document id {doc_id[:20]!r} in table '{tbl}' is not a number")
    if tbl == "counters":
        if not all(type(v) is int for v in doc.values()):
            raise ValueError("an id counter is not a number")
        return
    for key, types in _SCHEMA.get(tbl, ()):
        if type(doc.get(key)) not in types:
            raise ValueError(f"'{key}' of document {doc_id} in table '{tbl}' is missing or of the wrong type")
    owner = doc.get("owner")
    if owner is not None and (len(owner) != 2 or type(owner[0]) is not int or type(owner[1]) is not int):
        raise ValueError(f"'owner' of document {doc_id} in table '{tbl}' is not [pid, start]")
    id_key = _ID_KEYS.get(tbl)
    if id_key is not None and doc[id_key] != int(doc_id):
        raise ValueError(f"document {doc_id} in table '{tbl}' says it is {id_key} {doc[id_key]}")
    status = doc.get("status")
    if status is not None and (type(status) is not str or not _STATUS.fullmatch(status)):
        raise ValueError(f"document {doc_id} in table '{tbl}' has the status {str(status)[:20]!r}")
    if tbl == "jobs":
        for a in doc["attempts"]:
            if type(a) is not dict:
                raise ValueError(f"an attempt of job {doc_id} is not a record")


class TinyDBConnector:
    """The connector every resource manager takes (Auptimizer's `aup.dbase` connector role)."""

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
        self._released: set[int] = set()  # rids freed by us but still marked taken on disk
        self._to_sync: list[int] = []  # journal fds (dups) to fdatasync when the lock is released
        self._dbs: dict[str, Any] = {}
        self._n_results = 0  # results databases in `_dbs`
        self.me: ProcessId = current_process()
        self._jid_pool: list[int] = []
        self._result_parts: dict[tuple[int, int], tuple[int, int]] = {}
        self._pending: list[tuple[int, int, dict]] = []  # (eid, shard, doc)
        self._pids: dict[tuple[int, int], tuple[int, int]] = {}  # (eid, jid) → (attempt, pid) to record
        self._pending_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._closed = threading.Event()
        #: finished jobs' records the file system refused, in order: (eid, jid) → (file, record)
        self._unwritten: dict[tuple[int, int], tuple[str, dict]] = {}
        #: why the store can't be written now (None: it can); cleared by the flusher's retry
        self.write_error: StoreWriteError | None = None
        #: the flusher's last failure other than a full disk (a damaged file, EACCES), None once
        #: a round succeeds: a run waiting for the store fails with it rather than wait forever
        self.flush_failure: Exception | None = None
        #: databases this connector appended to and not yet compacted → when last written
        self._written: dict[str, float] = {}
        self._jid_floor: int | None = None
        self._jobs_memo: dict[int, tuple[list, list[dict]]] = {}
        self._rows_memo: dict[int, tuple[list | None, list[dict]]] = {}
        self._summaries_due: set[int] = set()  # experiments whose summary.json close() rewrites
        self._check_meta()

    # -- plumbing -------------------------------------------------------------------------

    def _db(self, relpath: str):
        """The database for `relpath`. Job and experiment files stay cached once read (a re-read
        costs two stats: `status` at 10,000 jobs reads each once); of the intermediate results,
        which grow without bound, only the `OPEN_DBS` most recently used stay in memory. At most
        `OPEN_DBS` journals stay open for writing."""
        with self._lock:
            db = self._dbs.pop(relpath, None)
            if db is None:
                db = open_db(os.path.join(self.root, relpath), validate=_validate)
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
            self._flock_depth += 1
            try:
                yield
            finally:
                self._flock_depth -= 1
                if self._flock_depth == 0:
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

    def _write(self, relpath: str, ops: list[dict], sync: bool = False) -> None:
        """Append journal operations to one database file (caller holds `_locked`).

        `sync`: on disk before the outermost `_locked` block returns.
        """
        path = os.path.join(self.root, relpath)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = storage_of(self._db(relpath)).append(ops)
        except StoreWriteError as exc:
            self.write_error = exc
            self._start_flusher()  # whatever write failed first (even a sync one), the flusher retries
            raise
        except OSError as exc:
            from .files import is_write_error

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

    def _raw(self, relpath: str, tbl: str) -> dict[str, dict]:
        """The table's documents as stored ({str(id): doc}); a hot-path read without TinyDB's
        per-document wrapping. Treat as read-only, under `self._lock`."""
        data = storage_of(self._db(relpath)).read()
        return (data or {}).get(tbl, {})

    def _put(self, relpath: str, tbl: str, doc_id: int, doc: dict, sync: bool = False) -> None:
        self._write(relpath, [{"t": tbl, "id": str(doc_id), "d": doc}], sync)

    def _patch(self, relpath: str, tbl: str, doc_ids: list[int], fields: dict, sync: bool = False) -> None:
        docs = self._raw(relpath, tbl)
        ops = []
        for doc_id in doc_ids:
            doc = docs.get(str(doc_id))
            if doc is not None:
                ops.append({"t": tbl, "id": str(doc_id), "d": {**doc, **fields}})
        if ops:
            self._write(relpath, ops, sync)

    def _delete(self, relpath: str, tbl: str, doc_ids: list[int]) -> None:
        if doc_ids:
            self._write(relpath, [{"t": tbl, "id": str(i), "x": 1} for i in doc_ids])

    META = "meta.json"

    def _meta(self, name: str):
        return table(self._db(self.META), name)

    @staticmethod
    def _exp_file(eid: int) -> str:
        return f"e{eid}/experiment.json"

    @staticmethod
    def _jobs_file(eid: int, jid: int) -> str:
        return f"e{eid}/jobs-{jid // JOBS_PER_SHARD}.json"

    def _exp(self, eid: int, name: str):
        return table(self._db(self._exp_file(eid)), name)

    def _jobs(self, eid: int, jid: int):
        return table(self._db(self._jobs_file(eid, jid)), "jobs")

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

    # -- damage to meta.json ----------------------------------------------------------------

    def _check_meta(self) -> None:
        """Read meta.json once; a damaged one is moved aside and its experiments rebuilt from the
        `e<eid>/` folders (ids, records), as are experiments missing from it."""
        storage = storage_of(self._db(self.META))
        repaired = False
        for _ in range(3):
            try:
                data = storage.read() or {}
                break
            except StoreCorruptError as exc:
                self._move_aside(exc)
                repaired = True
        else:  # pragma: no cover - three damaged files in a row
            data = {}
        old = data.get("resources")  # a store from before resources.json: move them there
        if not repaired and not old and self._eids_on_disk() <= set(map(int, data.get("experiments", {}))):
            return
        try:
            with self._locked():
                old = self._raw(self.META, "resources")
                if old:
                    self.add_resources(
                        [(d["rid"], d.get("name", ""), d.get("type", "cpu")) for d in old.values()]
                    )
                    self._write(self.META, [{"t": "resources", "clear": 1}])
                self._rebuild_experiments()
        except (StoreWriteError, KeyError, TypeError):
            pass  # no room to repair now (or an odd old record): the next command tries again

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

    def _rebuild_experiments(self) -> None:
        """Put back into meta.json the experiments only their folders remember (caller holds `_locked`)."""
        known = self._raw(self.META, "experiments")
        for eid in sorted(self._eids_on_disk()):
            mirror = self._read_or_none(self._exp_file(eid), "experiment").get("1")
            if str(eid) in known and not (
                mirror and known[str(eid)].get("status") == "RUNNING" and mirror.get("status") != "RUNNING"
            ):
                continue
            if mirror is None:
                config = (self._read_or_none(self._exp_file(eid), "config").get("1") or {}).get(
                    "config"
                ) or {}
                mirror = {
                    "eid": eid,
                    "user": None,
                    "name": str(config.get("name", f"experiment {eid}")),
                    "status": "INTERRUPTED",
                    "start": None,
                    "end": None,
                    "owner": None,
                    "host": None,
                    "best_jid": None,
                    "best_score": None,
                    "n_samples": config.get("n_samples"),
                    "target": config.get("target", "max"),
                    "resource": config.get("resource"),
                }
            self._put(self.META, "experiments", eid, {**mirror, "eid": eid})
        counters = self._raw(self.META, "counters").get("1") or {}
        floors = {c: max(int(counters.get(c, 0)), self._id_floor(c)) for c in ("eid", "jid")}
        if any(floors[c] != counters.get(c) for c in floors):
            self._put(self.META, "counters", 1, {**counters, **floors})

    def _read_or_none(self, relpath: str, tbl: str) -> dict[str, dict]:
        """A table of a file that may be missing or damaged ({} then)."""
        try:
            return self._raw(relpath, tbl)
        except StoreCorruptError:
            return {}

    # -- resources ------------------------------------------------------------------------

    # Definitions (rid, name, type: what env.ini lists, possibly thousands) live in
    # resources.json, written only when env.ini changes; who holds one lives in meta.json's
    # small "taken" table. A command reads resources.json only when it lists resources or env.ini
    # changed since the last sync (`resources_synced`), so start-up does not grow with them.

    RESOURCES = "resources.json"

    def _defs(self) -> dict[str, dict]:
        """The resource definitions ({str(rid): {rid, name, type}}; caller holds `_lock`). A
        damaged resources.json is moved aside: it is rebuilt from env.ini by the next sync."""
        try:
            return self._raw(self.RESOURCES, "resources")
        except StoreCorruptError as exc:
            self._move_aside(exc)
            return self._raw(self.RESOURCES, "resources")

    def _taken(self) -> dict[str, dict]:
        return self._raw(self.META, "taken")

    def _merged(self, doc: dict, taken: dict[str, dict]) -> dict:
        held = taken.get(str(doc["rid"]))
        if held is None:
            return {**doc, "status": "free", "owner": None, "jid": None}
        return {**doc, "status": "taken", "owner": held.get("owner"), "jid": held.get("jid")}

    def add_resource(self, name: str, rtype: str, rid: int | None = None, status: str = "free") -> int:
        """Register a resource (or re-register `rid` under the same name/type)."""
        with self._locked():
            if rid is None:
                rid = self._next_id("rid")
            self.add_resources([(rid, name, rtype)])
            return rid

    def add_resources(self, resources: Iterable[tuple[int, str, str]]) -> None:
        """Register (or re-register) many `(rid, name, type)` at once: one journal write, not one
        each (`init --cpu 16000`). Who holds one is kept."""
        with self._locked():
            ops, top = [], 0
            for rid, name, rtype in resources:
                ops.append(
                    {"t": "resources", "id": str(rid), "d": {"rid": rid, "name": str(name), "type": rtype}}
                )
                top = max(top, rid)
            if ops:
                self._write(self.RESOURCES, ops)
                self._unsync()
            counters = self._raw(self.META, "counters").get("1") or {}
            if top > int(counters.get("rid", 0)):
                self._put(self.META, "counters", 1, {**counters, "rid": top})

    def remove_resources(self, rtype: str | None = None) -> None:
        self._remove([r["rid"] for r in self.resources(rtype)])

    def remove_resource(self, rid: int) -> None:
        self._remove([rid])

    def _remove(self, rids: list[int]) -> None:
        with self._locked():
            if rids:
                self._delete(self.RESOURCES, "resources", rids)
                held = [rid for rid in rids if str(rid) in self._taken()]
                self._delete(self.META, "taken", held)
                self._unsync()

    def _unsync(self) -> None:
        if self._raw(self.META, "sync"):
            self._write(self.META, [{"t": "sync", "clear": 1}])

    def _resources_sig(self) -> list | None:
        """resources.json's snapshot (inode, mtime, size); None while its journal holds data."""
        path = os.path.join(self.root, self.RESOURCES)
        try:
            if os.stat(path + ".log").st_size:
                return None
        except FileNotFoundError:
            pass
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return [0, 0, 0]
        return [st.st_ino, st.st_mtime_ns, st.st_size]

    def resources_synced(self, stamp: str) -> bool:
        """True when the resources were made to match env.ini contents `stamp` and resources.json
        has not changed since: a command can skip reading them (two stats)."""
        with self._lock:
            doc = self._raw(self.META, "sync").get("1") or {}
        return bool(doc) and doc.get("env") == stamp and doc.get("file") == self._resources_sig()

    def mark_synced(self, stamp: str) -> None:
        """Remember that the resources match env.ini contents `stamp` (folds resources.json first)."""
        try:
            with self._locked():
                storage_of(self._db(self.RESOURCES)).compact()
                self._written.pop(self.RESOURCES, None)
                self._put(self.META, "sync", 1, {"env": stamp, "file": self._resources_sig()})
        except StoreWriteError:
            pass  # a full disk: the next command syncs again

    def resources(self, rtype: str | None = None) -> list[dict]:
        with self._lock:
            taken = self._taken()
            docs = [
                self._merged(d, taken) for d in self._defs().values() if rtype is None or d["type"] == rtype
            ]
        docs.sort(key=lambda d: d["rid"])
        return docs

    def get_resource(self, rid: int) -> dict | None:
        with self._lock:
            doc = self._defs().get(str(rid))
            return self._merged(doc, self._taken()) if doc else None

    def get_available_resource(self, rtype: str, rid_blacklist: Any = None) -> list[int]:
        blacklist = set(rid_blacklist or ())
        with self._lock:
            released, taken = self._released, self._taken()
            return sorted(
                d["rid"]
                for key, d in self._defs().items()
                if d["type"] == rtype
                and (key not in taken or d["rid"] in released)
                and d["rid"] not in blacklist
            )

    def take_available_resource(self, rid: int, jid: int | None = None) -> bool:
        """Atomically mark `rid` taken by this process; False if someone else has it."""
        with self._lock:
            if rid in self._released:  # still ours on disk: no write, no cross-process lock
                self._released.discard(rid)
                return True
        with self._locked():
            if str(rid) not in self._defs() or str(rid) in self._taken():
                return False
            self._put(self.META, "taken", rid, {"rid": rid, "owner": list(self.me), "jid": jid})
            return True

    def free_used_resource(self, rid: int) -> None:
        """Give `rid` back. The disk write is deferred (≤ FLUSH_INTERVAL) so that the next job
        of this process can take it again for free; other processes see it free soon after."""
        with self._lock:  # a resource taken by a live process is written by that process only
            held = self._taken().get(str(rid))
            if held is not None and held.get("owner") == list(self.me):
                self._released.add(rid)
                self._start_flusher()
            # otherwise it is not ours any more (freed by `resources --free`, maybe taken by
            # another process since): nothing to give back

    def _write_released(self) -> None:
        with self._locked():
            if self._released:
                rids = sorted(self._released)
                mine = [
                    rid for rid in rids if (self._taken().get(str(rid)) or {}).get("owner") == list(self.me)
                ]
                self._delete(self.META, "taken", mine)  # on failure they stay to write
                self._released.difference_update(rids)

    # -- recovery -------------------------------------------------------------------------

    def recover(self) -> dict[str, list[int]]:
        """Reclaim what dead processes left behind: taken resources, running experiments and jobs."""
        try:
            return self._recover()
        except StoreWriteError:  # a full disk: reads still work; the next command tries again
            return {"resources": [], "experiments": [], "jobs": []}

    def _recover(self) -> dict[str, list[int]]:
        now = time.time()
        with self._locked():
            freed = [d["rid"] for d in self._taken().values() if not _owner_alive(d.get("owner"))]
            self._delete(self.META, "taken", freed)
            experiments = [
                d["eid"]
                for d in self._raw(self.META, "experiments").values()
                if d["status"] == "RUNNING" and not _owner_alive(d.get("owner"))
            ]
            self._patch(self.META, "experiments", experiments, {"status": "INTERRUPTED", "end": now})
            jobs: list[int] = []
            for eid in experiments:
                for relpath in self._job_files(eid):
                    try:
                        docs = table(self._db(relpath), "jobs").all()
                    except StoreCorruptError:
                        continue  # reported by the command that shows it; never blocks every command
                    for doc in docs:
                        if doc["status"] not in LIVE_STATES:
                            continue
                        attempts = [dict(a) for a in doc.get("attempts", [])]
                        if attempts and attempts[-1].get("status") in LIVE_STATES:
                            attempts[-1].update(status="INTERRUPTED", end=now)
                        self._put(
                            relpath,
                            "jobs",
                            doc.doc_id,
                            {
                                **doc,
                                "status": "INTERRUPTED",
                                "end": now,
                                "attempts": attempts,
                                "error": "interrupted: the process running this job died",
                            },
                        )
                        jobs.append(doc.doc_id)
        return {"resources": freed, "experiments": experiments, "jobs": jobs}

    # -- experiments ----------------------------------------------------------------------

    def start_experiment(self, user: str | None, name: str, config: dict, **info: Any) -> int:
        with self._locked():
            eid = self._next_id("eid")
            doc = {
                "eid": eid,
                "user": user or getpass.getuser(),
                "name": name,
                "status": "RUNNING",
                "start": time.time(),
                "end": None,
                "owner": list(self.me),
                "host": socket.gethostname(),
                "best_jid": None,
                "best_score": None,
                **info,
            }
            self._put(self._exp_file(eid), "config", 1, {"config": config})
            self._put(self._exp_file(eid), "experiment", 1, doc)  # the copy meta.json is rebuilt from
            self._put(self.META, "experiments", eid, doc, sync=True)
            return eid

    def end_experiment(self, eid: int, status: str, **fields: Any) -> None:
        """Record how experiment `eid` ended (after its waiting records): raises StoreWriteError
        while the store can't be written."""
        try:
            self.write_pending()
            self.flush()
            self._write_released()
        except StoreWriteError:
            raise
        except Exception as exc:  # noqa: BLE001 — a damaged job file must not keep the end off record
            log.warning("aup-tui: %s", exc)
        with self._locked():
            stops = [d.doc_id for d in self._meta("stops").all() if d["eid"] == eid]
            self._delete(self.META, "stops", stops)
            doc = self._raw(self.META, "experiments").get(str(eid))
            if doc is not None:
                new = {**doc, "status": status, "end": time.time(), **fields}
                self._put(self._exp_file(eid), "experiment", 1, new)
                self._put(self.META, "experiments", eid, new, sync=True)
        for path in self._stop_markers(eid):
            try:
                os.unlink(path)
            except OSError:
                pass

    def experiments(self) -> list[dict]:
        with self._lock:
            docs = self._meta("experiments").all()
        return sorted((dict(d) for d in docs), key=lambda d: d["eid"])

    def get_experiment(self, eid: int) -> dict | None:
        with self._lock:
            doc = self._meta("experiments").get(doc_id=eid)
        return dict(doc) if doc else None

    def latest_experiment(self) -> dict | None:
        exps = self.experiments()
        return exps[-1] if exps else None

    def save_labels(self, eid: int, labels: list[str]) -> None:
        with self._locked():
            self._put(self._exp_file(eid), "labels", 1, {"labels": list(labels)})

    def get_labels(self, eid: int) -> list[str]:
        with self._lock:
            doc = self._exp(eid, "labels").get(doc_id=1)
        return list(doc["labels"]) if doc else []

    def log_error(self, eid: int, message: str, jid: int | None = None) -> None:
        with self._locked():
            n = len(self._exp(eid, "errors"))
            self._put(
                self._exp_file(eid), "errors", n + 1, {"jid": jid, "time": time.time(), "message": message}
            )

    def errors(self, eid: int) -> list[dict]:
        with self._lock:
            return [dict(d) for d in self._exp(eid, "errors").all()]

    # -- jobs -----------------------------------------------------------------------------

    def new_jid(self) -> int:
        """A fresh job id; ids are reserved in blocks so this rarely touches the disk."""
        with self._lock:
            if self._jid_pool:
                return self._jid_pool.pop()
        with self._locked():
            if not self._jid_pool:
                first = self._next_id("jid", JID_BLOCK)
                self._jid_pool = list(range(first + JID_BLOCK - 1, first - 1, -1))
            return self._jid_pool.pop()

    def start_job(
        self,
        eid: int,
        jid: int,
        config: dict,
        rid: int | None,
        resource: str,
        attempt: int,
        status: str = "RUNNING",
    ) -> None:
        """Record that attempt `attempt` of job `jid` started on resource `rid`; refused
        (StoreWriteError) while earlier records wait for room."""
        now = time.time()
        with self._locked():
            if self._unwritten and self.write_error is not None:
                raise self.write_error
            doc = self._raw(self._jobs_file(eid, jid), "jobs").get(str(jid))
            attempts = [dict(a) for a in doc["attempts"]] if doc else []
            attempts.append(
                {
                    "attempt": attempt,
                    "rid": rid,
                    "resource": resource,
                    "start": now,
                    "end": None,
                    "status": status,
                    "error": None,
                }
            )
            self._put(
                self._jobs_file(eid, jid),
                "jobs",
                jid,
                {
                    "jid": jid,
                    "eid": eid,
                    "config": config,
                    "status": status,
                    "rid": rid,
                    "resource": resource,
                    "score": None,
                    "values": None,
                    "error": None,
                    "start": doc["start"] if doc else now,
                    "end": None,
                    "attempts": attempts,
                },
            )

    def set_job_pid(self, eid: int, jid: int, attempt: int, pid: int) -> None:
        """Note the process-group leader of a local job's running attempt, so that a monitor in
        another process (`aup-tui watch`) can tell which GPU processes are the job's.

        Written by the flusher within `FLUSH_INTERVAL`, and only if the attempt still runs then:
        short jobs, which no monitor would see anyway, cost no journal write.
        """
        with self._pending_lock:
            self._pids[(eid, jid)] = (attempt, pid)
        self._start_flusher()

    def _write_pids(self) -> None:
        with self._pending_lock:
            if not self._pids:
                return
            pids, self._pids = self._pids, {}
        try:
            with self._locked():
                for (eid, jid), (attempt, pid) in pids.items():
                    self._patch_running_attempt(eid, jid, attempt, {"pid": pid})
        except BaseException:
            with self._pending_lock:  # the next flush tries again; newer pids win
                self._pids = {**pids, **self._pids}
            raise

    def _patch_running_attempt(self, eid: int, jid: int, attempt: int, fields: dict) -> None:
        """Put `fields` on job `jid`'s record while its attempt `attempt` still runs (caller holds
        `_locked`); nothing for an attempt that has ended, nor when they are there already."""
        relpath = self._jobs_file(eid, jid)
        doc = self._raw(relpath, "jobs").get(str(jid))
        current = (doc or {}).get("attempts") or [{}]
        if (
            doc
            and doc.get("status") == "RUNNING"
            and current[-1].get("attempt") == attempt
            and current[-1].get("end") is None
            and any(doc.get(k) != v for k, v in fields.items())
        ):
            self._write(relpath, [{"t": "jobs", "id": str(jid), "d": {**doc, **fields}}])

    def update_job(self, eid: int, jid: int, **fields: Any) -> None:
        with self._locked():
            doc = self._jobs(eid, jid).get(doc_id=jid)
            if doc is None:
                return
            if "status" in fields and doc.get("attempts"):
                attempts = [dict(a) for a in doc["attempts"]]
                attempts[-1]["status"] = fields["status"]
                fields["attempts"] = attempts
            self._put(self._jobs_file(eid, jid), "jobs", jid, {**doc, **fields})

    def end_job(
        self,
        eid: int,
        jid: int,
        score: float | None,
        status: str,
        values: list[float] | None = None,
        error: str | None = None,
        final: bool = True,
    ) -> float | None:
        """Record the end of the job's current attempt; on disk (fdatasync) before it returns.
        Returns the end time recorded (None when there is no such job), for events to carry.

        `final=False` ends an attempt that will be retried: the job stays RUNNING.

        When the file system refuses the write (disk full, I/O error) the record waits in memory
        (`pending_records`, shown by `jobs`/`get_job`) and the flusher writes it when it can: this
        never raises StoreWriteError into the job's thread.
        """
        now = time.time()
        relpath = self._jobs_file(eid, jid)
        with self._locked():
            waiting = self._unwritten.get((eid, jid))
            doc = waiting[1] if waiting else self._raw(relpath, "jobs").get(str(jid))
            if doc is None:
                return None
            attempts = [dict(a) for a in doc.get("attempts", [])]
            if attempts:
                attempts[-1].update(end=now, status=status, error=error, score=score)
            new = {**doc, "attempts": attempts, "error": error}
            new.pop("pid", None)  # the attempt's process is gone
            if final:
                new.update(status=status, score=score, values=values, end=now)
            if self._unwritten:  # earlier records wait: this one queues behind them
                self._unwritten[(eid, jid)] = (relpath, new)
                return now
            try:
                self._put(relpath, "jobs", jid, new, sync=True)
            except StoreWriteError:
                self._unwritten[(eid, jid)] = (relpath, new)
                self._start_flusher()
            return now

    @property
    def pending_records(self) -> int:
        """Finished jobs' records waiting for the store to take them."""
        return len(self._unwritten)

    def write_pending(self) -> None:
        """Write the records that wait (in order); StoreWriteError if the store still refuses."""
        with self._locked():
            while self._unwritten:
                (eid, jid), (relpath, doc) = next(iter(self._unwritten.items()))
                self._put(relpath, "jobs", jid, doc, sync=True)
                del self._unwritten[(eid, jid)]

    def _probe_writable(self) -> None:
        """A page written and removed beside the journals: StoreWriteError while there is no room."""
        from .files import is_write_error, write_all

        path = os.path.join(self.root, f".probe-{os.getpid()}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            try:
                write_all(fd, b"\0" * 8192)
            finally:
                os.close(fd)
                os.unlink(path)
        except OSError as exc:
            if is_write_error(exc):
                raise StoreWriteError(self.root, exc) from None
            raise

    def retry_writes(self) -> bool:
        """Try everything that waits; True (and `write_error` cleared) once the store takes writes.

        Any other failure (a store file damaged meanwhile, EACCES, EMFILE) is kept in
        `flush_failure` and returns False: the flusher tries again, and a run waiting for the
        store fails with it instead of waiting forever."""
        try:
            self.write_pending()
            self.flush()
            self._write_released()
            if self.write_error is not None:
                self._probe_writable()
        except StoreWriteError as exc:
            self.write_error = exc
            return False
        except Exception as exc:  # noqa: BLE001 — reported through flush_failure
            self.flush_failure = exc
            return False
        self.write_error = None
        self.flush_failure = None
        return True

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

    def get_job(self, jid: int, eid: int | None = None) -> dict | None:
        with self._lock:
            for (e, j), (_, doc) in self._unwritten.items():
                if j == jid and eid in (None, e):
                    return dict(doc)
        if eid is not None:
            with self._lock:
                found = self._raw(self._jobs_file(eid, jid), "jobs").get(str(jid))
            return dict(found) if found else None
        for relpath in self._files(f"e*/jobs-{jid // JOBS_PER_SHARD}.json"):
            with self._lock:
                found = self._raw(relpath, "jobs").get(str(jid))
            if found:
                return dict(found)
        return None

    def jobs(self, eid: int) -> list[dict]:
        """Every job of experiment `eid` by jid, records still waiting to be written included.

        The sorted list is kept until one of the experiment's job files changes, so the second
        and third caller of one command (status, summary, best job) pay two stats a file."""
        stamp = []
        with self._lock:
            for relpath in self._job_files(eid):
                storage = storage_of(self._db(relpath))
                storage.read()
                stamp.append((relpath, storage.signature))
            memo = self._jobs_memo.get(eid)
            if memo is not None and memo[0] == stamp:
                docs = memo[1]
            else:
                docs = sorted(
                    (doc for relpath, _ in stamp for doc in self._raw(relpath, "jobs").values()),
                    key=lambda d: d["jid"],
                )
                self._jobs_memo[eid] = (stamp, docs)
            if not self._unwritten:
                return [dict(d) for d in docs]
        out: dict[int, dict] = {d["jid"]: dict(d) for d in docs}
        with self._lock:
            for (e, j), (_, doc) in self._unwritten.items():
                if e == eid:
                    out[j] = dict(doc)
        return [out[j] for j in sorted(out)]

    # -- what `status` shows, without reading every record in full ---------------------------

    def _shard_stamp(self, eid: int) -> list | None:
        """Each job file's snapshot (name, inode, mtime, size); None while a journal holds data."""
        folder = os.path.join(self.root, f"e{eid}")
        stamp = []
        for name in sorted(self._listdir(folder)):
            if not name.startswith("jobs-"):
                continue
            try:
                st = os.stat(os.path.join(folder, name))
            except FileNotFoundError:
                return None
            if name.endswith(".log"):
                if st.st_size:
                    return None
            elif name.endswith(".json"):
                stamp.append([name, st.st_ino, st.st_mtime_ns, st.st_size])
        return stamp

    def _write_summary(self, eid: int) -> None:
        """`e<eid>/summary.json`: the columns `status` shows, for every job, with a checksum and
        the job files' stamps (caller holds `_locked`, journals folded)."""
        stamp = self._shard_stamp(eid)
        if stamp is None or any(e == eid for e, _ in self._unwritten):
            return
        rows = [
            [j["jid"], j["status"], j["score"], j["config"], j["resource"], j.get("end")]
            for j in self.jobs(eid)
        ]
        body = json.dumps(rows, separators=(",", ":")).encode()
        head = json.dumps({"crc": zlib.crc32(body), "shards": stamp}).encode()
        path = os.path.join(self.root, f"e{eid}", "summary.json")
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(head + b"\n" + body)
            os.replace(tmp, path)
        except OSError:  # only a shortcut: without it `status` reads the job files
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def job_rows(self, eid: int) -> list[dict]:
        """jid, status, score, config, resource and end of every job (what `status` shows):
        from `e<eid>/summary.json` when it matches the job files, else from the job files.
        Treat the rows as read-only (a second call in one command may share them)."""
        if not self._unwritten:
            try:
                stamp = self._shard_stamp(eid)
                memo = self._rows_memo.get(eid)
                if memo is not None and memo[0] == stamp:
                    return list(memo[1])
                with open(os.path.join(self.root, f"e{eid}", "summary.json"), "rb") as f:
                    head, _, body = f.read().partition(b"\n")
                meta = json.loads(head)
                if meta["crc"] == zlib.crc32(body) and meta["shards"] == stamp:
                    rows = [
                        {
                            "jid": r[0],
                            "status": r[1],
                            "score": r[2],
                            "config": r[3],
                            "resource": r[4],
                            "end": r[5],
                        }
                        for r in json.loads(body)
                    ]
                    self._rows_memo[eid] = (stamp, rows)  # the summary and the listing share one read
                    return list(rows)
            except (OSError, ValueError, KeyError, TypeError, IndexError):
                pass  # missing, stale or damaged: it is only a shortcut
        return self.jobs(eid)

    def get_best_result(
        self, eid: int, maximize: bool, jobs: Iterable[dict] | None = None
    ) -> tuple[int, float] | None:
        """`(jid, score)` of the best FINISHED job; on a tie the one that finished first wins
        (see `better`). `jobs`: the experiment's jobs when the caller has read them already."""
        best: tuple[float, float | None, int] | None = None
        for j in self.jobs(eid) if jobs is None else jobs:
            if (
                j["status"] == "FINISHED"
                and j["score"] is not None
                and better(j["score"], j.get("end"), j["jid"], best, maximize)
            ):
                best = (j["score"], j.get("end"), j["jid"])
        return (best[2], best[0]) if best else None

    # -- intermediate results -------------------------------------------------------------

    def save_intermediate_result(
        self, eid: int, jid: int, index: int, values: list[float], attempt: int = 1
    ) -> None:
        """Buffer one intermediate result; it reaches the disk within `FLUSH_INTERVAL`."""
        doc = {"jid": jid, "attempt": attempt, "index": index, "values": list(values), "time": time.time()}
        with self._pending_lock:
            self._pending.append((eid, jid, doc))
        self._start_flusher()

    def _start_flusher(self) -> None:
        if self._flusher is None and not self._closed.is_set():
            with self._pending_lock:
                if self._flusher is None:
                    self._flusher = threading.Thread(
                        target=self._flush_loop, name="aup-store-flush", daemon=True
                    )
                    self._flusher.start()

    def _compact_idle(self) -> None:
        """Fold the journals nobody wrote for `COMPACT_IDLE` seconds (finished jobs' shards) in
        the background, so that the end of a long run has only the last few left to fold."""
        now = time.monotonic()
        with self._lock:
            idle = [p for p, t in self._written.items() if now - t >= COMPACT_IDLE]
        if not idle:
            return
        with self._locked():
            for relpath in idle:
                if now - self._written.get(relpath, now) >= COMPACT_IDLE:
                    storage_of(self._db(relpath)).compact()
                    del self._written[relpath]

    def _flush_loop(self) -> None:
        """Until close: write what waits. Never dies: a run waits on it (`write_error`)."""
        while not self._closed.wait(FLUSH_INTERVAL):
            try:
                if self.write_error is not None or self._unwritten:
                    self.retry_writes()  # quietly: the experiment tells the person, once
                    continue
                if self._pending or self._pids or self._released or self._dirty or self._written:
                    self.flush()
                    self._write_released()
                    self.sync()
                    self._compact_idle()
                    self.flush_failure = None
            except StoreWriteError:
                pass  # `write_error` is set: retried next round
            except Exception as exc:  # keep going; the next round retries the batch
                if self.flush_failure is None or str(self.flush_failure) != str(exc):
                    log.exception("flushing the store failed")
                self.flush_failure = exc

    def flush(self) -> None:
        """Write buffered intermediate results and job pids now."""
        self._write_pids()
        with self._pending_lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, []
        written: set[int] = set()
        try:
            self._write_results(batch, written)
        finally:
            if len(written) < len(batch):  # only what is not in a journal yet waits for the next try
                with self._pending_lock:
                    self._pending[:0] = [item for item in batch if id(item[2]) not in written]

    def _write_results(self, batch: list[tuple[int, int, dict]], written: set[int]) -> None:
        """Append `batch`'s results to their parts; `written` gets the id() of each document as
        soon as its chunk is in a journal (and `_result_parts` counts it), so a failure later in
        the batch never makes a retry append it twice."""
        groups: dict[tuple[int, int], list[dict]] = {}
        latest: dict[tuple[int, int], dict] = {}
        for eid, jid, doc in batch:
            groups.setdefault((eid, jid // JOBS_PER_SHARD), []).append(doc)
            latest[(eid, jid)] = doc
        with self._locked():
            self._write_latest(latest)
            for (eid, shard), docs in groups.items():
                while docs:
                    part, count = self._result_part(eid, shard)
                    room = RESULTS_PER_PART - count
                    chunk, docs = docs[:room], docs[room:]
                    self._write(
                        f"e{eid}/results-{shard}-{part}.json",
                        [{"t": "results", "id": str(count + i + 1), "d": d} for i, d in enumerate(chunk)],
                    )
                    count += len(chunk)
                    self._result_parts[(eid, shard)] = (
                        (part + 1, 0) if count >= RESULTS_PER_PART else (part, count)
                    )
                    written.update(id(d) for d in chunk)

    def _write_latest(self, latest: dict[tuple[int, int], dict]) -> None:
        """A running job's record carries its latest intermediate result (`values`), so another
        process (`aup-tui watch`) shows it without reading the result files; one write per job
        and flush, none for an attempt that has ended since."""
        for (eid, jid), result in latest.items():
            self._patch_running_attempt(eid, jid, result["attempt"], {"values": result["values"]})

    def _result_part(self, eid: int, shard: int) -> tuple[int, int]:
        known = self._result_parts.get((eid, shard))
        if known is None:
            parts = self._result_files(eid, shard)
            part = max((int(p.rsplit("-", 1)[1].split(".")[0]) for p in parts), default=0)
            count = len(table(self._db(f"e{eid}/results-{shard}-{part}.json"), "results"))
            known = (part + 1, 0) if count >= RESULTS_PER_PART else (part, count)
            self._result_parts[(eid, shard)] = known
        return known

    def _result_files(self, eid: int, shard: int) -> list[str]:
        return self._files(f"e{eid}/results-{shard}-*.json")

    def intermediate_results(self, eid: int, jid: int, attempt: int | None = None) -> list[dict]:
        """The job's intermediate results in order (of one attempt, or all), including unflushed ones."""
        out: list[dict] = []
        for relpath in self._result_files(eid, jid // JOBS_PER_SHARD):
            with self._lock:
                out.extend(dict(d) for d in table(self._db(relpath), "results").search(Query().jid == jid))
        with self._pending_lock:
            out.extend(dict(doc) for _, j, doc in self._pending if j == jid)
        if attempt is not None:
            out = [r for r in out if r.get("attempt", 1) == attempt]
        out.sort(key=lambda d: (d.get("attempt", 1), d["index"]))
        return out

    # -- stop requests and passive answers from other processes ---------------------------

    def request_stop(self, eid: int, jid: int | None = None) -> None:
        """Ask the process running experiment `eid` to stop job `jid` (or the whole experiment).

        On a full disk the request is an empty file (`stop.e<eid>.<jid|all>.<ns>`: an inode, no
        data block), so a stop always gets through."""
        try:
            with self._locked():
                self._put(
                    self.META,
                    "stops",
                    self._next_id("stop"),
                    {"eid": eid, "jid": jid, "time": time.time()},
                    sync=True,
                )
        except StoreWriteError:
            path = os.path.join(self.root, f"stop.e{eid}.{'all' if jid is None else jid}.{time.time_ns()}")
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))

    def _stop_markers(self, eid: int | None = None) -> list[str]:
        prefix = "stop." if eid is None else f"stop.e{eid}."
        return [os.path.join(self.root, n) for n in self._listdir(self.root) if n.startswith(prefix)]

    def _marker_requests(self, eid: int | None = None) -> list[dict]:
        out = []
        for path in self._stop_markers(eid):
            m = re.fullmatch(r"stop\.e([0-9]+)\.(all|[0-9]+)\.([0-9]+)", os.path.basename(path))
            if m:
                out.append(
                    {
                        "eid": int(m.group(1)),
                        "jid": None if m.group(2) == "all" else int(m.group(2)),
                        "time": int(m.group(3)) / 1e9,
                    }
                )
        return out

    def stop_requests(self, eid: int) -> list[dict]:
        with self._lock:
            stored = [dict(d) for d in self._raw(self.META, "stops").values() if d["eid"] == eid]
        return stored + self._marker_requests(eid)

    def is_job_stopped(self, jid: int, eid: int | None = None) -> bool:
        with self._lock:
            stops = list(self._raw(self.META, "stops").values())
        for req in stops + self._marker_requests(eid):
            if req["jid"] == jid or (req["jid"] is None and eid is not None and req["eid"] == eid):
                return True
        doc = self.get_job(jid, eid)
        return bool(doc and doc["status"] in ("STOPPED", "EARLY_STOPPED"))

    def submit_passive(self, eid: int, jid: int, text: str, failed: bool = False) -> None:
        """Hand a passive job's pasted output (or a failure reason) to the process running it."""
        with self._locked():
            self._put(
                self.META,
                "passive",
                self._next_id("passive"),
                {"eid": eid, "jid": jid, "text": text, "failed": failed, "time": time.time()},
                sync=True,
            )

    def take_passive_answers(self, eid: int) -> list[dict]:
        """Remove and return the answers other processes left for experiment `eid`."""
        with self._lock:
            if not any(d["eid"] == eid for d in self._meta("passive").all()):
                return []
        with self._locked():
            mine = [d for d in self._meta("passive").all() if d["eid"] == eid]
            self._delete(self.META, "passive", [d.doc_id for d in mine])
            return [dict(d) for d in mine]

    # -- lifecycle ------------------------------------------------------------------------

    def changed_since(self, stamp: tuple | None) -> tuple[bool, tuple]:
        """Cheap change detection for watchers: (changed?, new stamp) over the store's files."""
        sig = []
        for path in sorted(glob.glob(os.path.join(self.root, "**", "*.json*"), recursive=True)):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            sig.append((path, st.st_mtime_ns, st.st_size))
        new = tuple(sig)
        return new != stamp, new

    def close(self) -> None:
        """Flush what is buffered and fold the journals we wrote into plain TinyDB files.

        On a store that can't be written, what waits is named in one warning (the jobs' logs
        keep their output) and the files are left as they are: readable, journals unfolded."""
        self._closed.set()
        flusher = self._flusher
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join()  # mid-round it would write (and flock) on what is closed below
        try:
            self.write_pending()
            self.flush()
            self._write_released()
            with self._locked():
                relpaths = sorted(self._written)
                # in groups that `_db` keeps open together: opening more results databases than
                # OPEN_DBS would evict (close) ones already listed, and compacting those reopens fds
                for start in range(0, len(relpaths), OPEN_DBS):
                    storages = [
                        storage_of(self._db(relpath)) for relpath in relpaths[start : start + OPEN_DBS]
                    ]
                    if len(storages) > 8:  # mostly waiting on the file system: fold a few at a time
                        from concurrent.futures import ThreadPoolExecutor

                        with ThreadPoolExecutor(4, thread_name_prefix="aup-store-compact") as pool:
                            list(pool.map(lambda st: st.compact(), storages))
                    else:
                        for storage in storages:
                            storage.compact()
                self._written.clear()
                for eid in sorted(self._summaries_due):
                    self._write_summary(eid)
        except StoreWriteError as exc:
            lost = len(self._unwritten)
            if lost or self._pending:
                log.warning(
                    "aup-tui: %s; %d finished jobs' records and %d intermediate results were not "
                    "written (the jobs' output is in their logs)",
                    exc,
                    lost,
                    len(self._pending),
                )
        finally:
            with self._lock:
                for db in self._dbs.values():
                    db.close()
                self._dbs.clear()
            self.sync()
            os.close(self._lockfd)
