"""Experiment records (meta.json, mirrored in `e<eid>/experiment.json`), their labels and
error messages, and the recovery of what dead processes left running."""

from __future__ import annotations

import getpass
import os
import time
from typing import Any

from ..status import ExperimentStatus, JobStatus
from .database import log
from .files import StoreCorruptError, StoreWriteError, table
from .process import owner_alive
from .requests import RequestRecords
from .resources import ResourceRecords
from .results import ResultRecords
from .schema import LIVE_STATES


class ExperimentRecords(ResultRecords, ResourceRecords, RequestRecords):
    """Experiments: start, end, labels, errors; recovery after a crash."""

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
            freed = [d["rid"] for d in self._taken().values() if not owner_alive(d.get("owner"))]
            self._delete(self.META, "taken", freed)
            experiments = [
                d["eid"]
                for d in self._raw(self.META, "experiments").values()
                if d["status"] == ExperimentStatus.RUNNING and not owner_alive(d.get("owner"))
            ]
            interrupted = {"status": ExperimentStatus.INTERRUPTED, "end": now}
            self._patch(self.META, "experiments", experiments, interrupted)
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
                            attempts[-1].update(status=JobStatus.INTERRUPTED, end=now)
                        self._put(
                            relpath,
                            "jobs",
                            doc.doc_id,
                            {
                                **doc,
                                "status": JobStatus.INTERRUPTED,
                                "end": now,
                                "attempts": attempts,
                                "error": "interrupted: the process running this job died",
                            },
                        )
                        jobs.append(doc.doc_id)
        return {"resources": freed, "experiments": experiments, "jobs": jobs}

    # -- experiments ----------------------------------------------------------------------

    def start_experiment(self, user: str | None, name: str, config: dict[str, Any], **info: Any) -> int:
        with self._locked():
            eid = self._next_id("eid")
            doc = {
                "eid": eid,
                "user": user or getpass.getuser(),
                "name": name,
                "status": ExperimentStatus.RUNNING,
                "start": time.time(),
                "end": None,
                "owner": list(self.me),
                "host": os.uname().nodename,  # as socket.gethostname(), without importing socket
                "best_jid": None,
                "best_score": None,
                **info,
            }
            self._put(self._exp_file(eid), "config", 1, {"config": config})
            self._put(self._exp_file(eid), "experiment", 1, doc)  # the copy meta.json is rebuilt from
            self._put(self.META, "experiments", eid, doc, sync=True)
            return eid

    def start_experiment_by_eid(self, eid: int) -> dict[str, Any] | None:
        """Make ended experiment `eid` RUNNING again, owned by this process (Auptimizer's name:
        `resume` and `rerun` continue it under its own id). Its start, best job and jobs are kept;
        returns the record, or None when there is no such experiment or a live process runs it."""
        with self._locked():
            doc = self._raw(self.META, "experiments").get(str(eid))
            if doc is None or (doc["status"] == ExperimentStatus.RUNNING and owner_alive(doc.get("owner"))):
                return None
            new = {
                **doc,
                "status": ExperimentStatus.RUNNING,
                "end": None,
                "owner": list(self.me),
                "host": os.uname().nodename,
            }
            new.pop("reason", None)
            self._put(self._exp_file(eid), "experiment", 1, new)
            self._put(self.META, "experiments", eid, new, sync=True)
            return dict(new)

    def experiment_config(self, eid: int) -> dict[str, Any]:
        """The experiment file's content as experiment `eid` was started with it ({} when unknown)."""
        with self._lock:
            doc = self._exp(eid, "config").get(doc_id=1)
        return dict(doc["config"]) if doc else {}

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

    def experiments(self) -> list[dict[str, Any]]:
        with self._lock:
            docs = self._meta("experiments").all()
        return sorted((dict(d) for d in docs), key=lambda d: d["eid"])

    def get_experiment(self, eid: int) -> dict[str, Any] | None:
        with self._lock:
            doc = self._meta("experiments").get(doc_id=eid)
        return dict(doc) if doc else None

    def latest_experiment(self) -> dict[str, Any] | None:
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

    def errors(self, eid: int) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(d) for d in self._exp(eid, "errors").all()]
