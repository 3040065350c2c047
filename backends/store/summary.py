"""What `status` shows, without reading every record in full: `e<eid>/summary.json`, written
when a run's store closes and used while it matches the job files (a checksummed cache)."""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

from .jobs import JobRecords


class JobSummary(JobRecords):
    """The columns `status` shows for every job of an experiment."""

    # -- what `status` shows, without reading every record in full ---------------------------

    def _shard_stamp(self, eid: int) -> list[list[str | int]] | None:
        """Each job file's snapshot (name, inode, mtime, size); None while a journal holds data."""
        folder = os.path.join(self.root, f"e{eid}")
        stamp: list[list[str | int]] = []
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

    def job_rows(self, eid: int) -> list[dict[str, Any]]:
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
