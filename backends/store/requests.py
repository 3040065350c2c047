"""Requests from other processes: stop a job or an experiment (a record, or an empty marker
file when the disk is full), and passive jobs' pasted answers."""

from __future__ import annotations

import os
import re
import time
from typing import Any

from ..status import JobStatus
from .files import StoreWriteError
from .jobs import JobRecords


class RequestRecords(JobRecords):
    """Stop requests and passive answers, left by one process for the one running the experiment."""

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

    def _marker_requests(self, eid: int | None = None) -> list[dict[str, Any]]:
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

    def stop_requests(self, eid: int) -> list[dict[str, Any]]:
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
        return bool(doc and JobStatus(doc["status"]).is_stopped)

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

    def take_passive_answers(self, eid: int) -> list[dict[str, Any]]:
        """Remove and return the answers other processes left for experiment `eid`."""
        with self._lock:
            if not any(d["eid"] == eid for d in self._meta("passive").all()):
                return []
        with self._locked():
            mine = [d for d in self._meta("passive").all() if d["eid"] == eid]
            self._delete(self.META, "passive", [d.doc_id for d in mine])
            return [dict(d) for d in mine]
