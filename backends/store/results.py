"""Intermediate results: buffered in memory, appended to `e<eid>/results-<shard>-<part>.json`
(at most 4,096 a file) by the flusher twice a second."""

from __future__ import annotations

import time
from typing import Any

from tinydb import Query

from .database import JOBS_PER_SHARD, RESULTS_PER_PART
from .files import table
from .jobs import JobRecords


class ResultRecords(JobRecords):
    """Every result a job reports, and its latest one on the job's record."""

    # -- intermediate results -------------------------------------------------------------

    def save_intermediate_result(
        self, eid: int, jid: int, index: int, values: list[float], attempt: int = 1
    ) -> None:
        """Buffer one intermediate result; it reaches the disk within `FLUSH_INTERVAL`."""
        doc = {"jid": jid, "attempt": attempt, "index": index, "values": list(values), "time": time.time()}
        with self._pending_lock:
            self._pending.append((eid, jid, doc))
        self._start_flusher()

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

    def _write_results(self, batch: list[tuple[int, int, dict[str, Any]]], written: set[int]) -> None:
        """Append `batch`'s results to their parts; `written` gets the id() of each document as
        soon as its chunk is in a journal (and `_result_parts` counts it), so a failure later in
        the batch never makes a retry append it twice."""
        groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
        latest: dict[tuple[int, int], dict[str, Any]] = {}
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

    def _write_latest(self, latest: dict[tuple[int, int], dict[str, Any]]) -> None:
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

    def intermediate_results(self, eid: int, jid: int, attempt: int | None = None) -> list[dict[str, Any]]:
        """The job's intermediate results in order (of one attempt, or all), including unflushed ones."""
        out: list[dict[str, Any]] = []
        for relpath in self._result_files(eid, jid // JOBS_PER_SHARD):
            with self._lock:
                out.extend(dict(d) for d in table(self._db(relpath), "results").search(Query().jid == jid))
        with self._pending_lock:
            out.extend(dict(doc) for _, j, doc in self._pending if j == jid)
        if attempt is not None:
            out = [r for r in out if r.get("attempt", 1) == attempt]
        out.sort(key=lambda d: (d.get("attempt", 1), d["index"]))
        return out
