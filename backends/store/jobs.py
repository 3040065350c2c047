"""Job records: one per job in `e<eid>/jobs-<n>.json`, each attempt in it; a finished job's
record is handed to the kernel (and fdatasync'ed, per job or in batches) before `end_job`
returns, or waits in memory while the file system refuses it."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ..status import JobStatus
from .database import JID_BLOCK, JOBS_PER_SHARD, StoreDatabase
from .files import StoreWriteError, storage_of
from .schema import better


class JobRecords(StoreDatabase):
    """Jobs: ids, starts, ends, the records waiting for room, reads."""

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
        config: dict[str, Any],
        rid: int | None,
        resource: str,
        attempt: int,
        status: str = JobStatus.RUNNING,
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
            self._live.add((eid, jid))

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

    def _patch_running_attempt(self, eid: int, jid: int, attempt: int, fields: dict[str, Any]) -> None:
        """Put `fields` on job `jid`'s record while its attempt `attempt` still runs (caller holds
        `_locked`); nothing for an attempt that has ended, nor when they are there already."""
        relpath = self._jobs_file(eid, jid)
        doc = self._raw(relpath, "jobs").get(str(jid))
        current = (doc or {}).get("attempts") or [{}]
        if (
            doc
            and doc.get("status") == JobStatus.RUNNING
            and current[-1].get("attempt") == attempt
            and current[-1].get("end") is None
            and any(doc.get(k) != v for k, v in fields.items())
        ):
            self._update(relpath, "jobs", jid, fields)

    def update_job(self, eid: int, jid: int, **fields: Any) -> None:
        with self._locked():
            doc = self._jobs(eid, jid).get(doc_id=jid)
            if doc is None:
                return
            if "status" in fields and doc.get("attempts"):
                attempts = [dict(a) for a in doc["attempts"]]
                attempts[-1]["status"] = fields["status"]
                fields["attempts"] = attempts
            self._update(self._jobs_file(eid, jid), "jobs", jid, fields)

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
            attempts = list(doc.get("attempts", []))
            if attempts:
                attempts[-1] = {**attempts[-1], "end": now, "status": status, "error": error, "score": score}
            fields: dict[str, Any] = {"attempts": attempts, "error": error}
            if final:
                fields.update(status=status, score=score, values=values, end=now)
                self._live.discard((eid, jid))
            new = {**doc, **fields}
            new.pop("pid", None)  # the attempt's process is gone
            if self._unwritten:  # earlier records wait: this one queues behind them
                self._unwritten[(eid, jid)] = (relpath, new)
                return now
            try:
                # the change only: the config and earlier attempts are on record already
                self._update(relpath, "jobs", jid, fields, ("pid",) if "pid" in doc else (), sync=True)
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

    def get_job(self, jid: int, eid: int | None = None) -> dict[str, Any] | None:
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

    def jobs(self, eid: int) -> list[dict[str, Any]]:
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
        out: dict[int, dict[str, Any]] = {d["jid"]: dict(d) for d in docs}
        with self._lock:
            for (e, j), (_, doc) in self._unwritten.items():
                if e == eid:
                    out[j] = dict(doc)
        return [out[j] for j in sorted(out)]

    def get_best_result(
        self, eid: int, maximize: bool, jobs: Iterable[dict[str, Any]] | None = None
    ) -> tuple[int, float] | None:
        """`(jid, score)` of the best FINISHED job; on a tie the one that finished first wins
        (see `better`). `jobs`: the experiment's jobs when the caller has read them already."""
        best: tuple[float, float | None, int] | None = None
        for j in self.jobs(eid) if jobs is None else jobs:
            if (
                j["status"] == JobStatus.FINISHED
                and j["score"] is not None
                and better(j["score"], j.get("end"), j["jid"], best, maximize)
            ):
                best = (j["score"], j.get("end"), j["jid"])
        return (best[2], best[0]) if best else None
