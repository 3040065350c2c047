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

import glob
import os
import re
import threading
import time

from .database import (
    COMPACT_IDLE,
    FLUSH_INTERVAL,
    JID_BLOCK,
    JOBS_PER_SHARD,
    OPEN_DBS,
    RESULTS_PER_PART,
    log,
)
from .experiments import ExperimentRecords
from .files import StoreWriteError, compact_aside, compact_many, is_write_error, storage_of, write_all
from .repair import MetaRepair
from .schema import LIVE_STATES, better
from .summary import JobSummary

_SHARD_FILE = re.compile(r"e([0-9]+)/(?:jobs|results)-([0-9]+)(?:-[0-9]+)?\.json")

__all__ = [
    "COMPACT_IDLE",
    "FLUSH_INTERVAL",
    "JID_BLOCK",
    "JOBS_PER_SHARD",
    "LIVE_STATES",
    "OPEN_DBS",
    "RESULTS_PER_PART",
    "TinyDBConnector",
    "better",
]


class TinyDBConnector(ExperimentRecords, JobSummary, MetaRepair):
    """The connector every resource manager takes (Auptimizer's `aup.dbase` connector role).

    Each kind of record has its module (resources, experiments, jobs, results, requests,
    summary, repair, on the files of database.py); this class adds the background flusher and
    the end of a store's use (`close`)."""

    def __init__(self, auppath: str = ".aup", sync: str | None = None) -> None:
        """`sync`: "job" fdatasyncs every finished job before `end_job` returns; "batch" (the
        default, or env.ini's `store_sync`) hands it to the kernel at once — safe against a
        killed process — and fdatasyncs twice a second, so power loss costs at most that."""
        super().__init__(auppath, sync)
        self._check_meta()

    def _probe_writable(self) -> None:
        """A page written and removed beside the journals: StoreWriteError while there is no room."""

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

    def _compact_idle(self) -> None:
        """Fold, in the background, the journals nobody wrote for `COMPACT_IDLE` seconds and
        those of shards whose jobs are over (no job of ours runs there and new job ids land
        beyond them), so that the end of a run has only the last few left to fold."""
        now = time.monotonic()
        with self._lock:
            idle = [p for p, t in self._written.items() if now - t >= COMPACT_IDLE or self._shard_done(p)]
        if not idle:
            return
        for relpath in idle:
            with self._lock:
                idle_long = now - self._written.get(relpath, now) >= COMPACT_IDLE
                if relpath in self._written and idle_long:
                    storage = storage_of(self._db(relpath))
                elif relpath in self._written and relpath in self._dbs and self._shard_done(relpath):
                    storage = storage_of(self._dbs[relpath])  # an evicted one is not re-read for it
                else:
                    storage = None
            # the write lock only while copying, renaming, cutting: no job waits on the fsyncs
            if storage is None:
                continue
            try:
                folded = compact_aside(storage, self._locked)
            finally:
                with self._lock:
                    held = self._dbs.get(relpath)
                    if held is None or storage_of(held) is not storage:
                        storage.close()  # evicted meanwhile (results): no journal fd left open
            if folded:
                with self._lock:
                    if self._written.get(relpath, now) <= now:  # not written again since
                        self._written.pop(relpath, None)

    def _shard_done(self, relpath: str) -> bool:
        """True for a job or results file (`e<eid>/jobs-<n>.json`, `e<eid>/results-<n>-<p>.json`)
        that no job of ours writes to any more (caller holds `_lock`)."""
        m = _SHARD_FILE.fullmatch(relpath)
        if m is None:
            return False
        eid, shard = int(m.group(1)), int(m.group(2))
        if self._jid_pool and self._jid_pool[-1] < (shard + 1) * JOBS_PER_SHARD:
            return False  # the next job ids still land in it
        return not any(e == eid and j // JOBS_PER_SHARD == shard for e, j in self._live)

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

    # -- lifecycle ------------------------------------------------------------------------

    def changed_since(
        self, stamp: tuple[tuple[str, int, int], ...] | None
    ) -> tuple[bool, tuple[tuple[str, int, int], ...]]:
        """Cheap change detection for watchers: (changed?, new stamp) over the store's files."""
        sig: list[tuple[str, int, int]] = []
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
                    # mostly waiting on the file system: many are folded a few at a time
                    compact_many(storages, threads=4 if len(storages) > 8 else 1)
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
