"""Resources: definitions (rid, name, type: what env.ini lists, possibly thousands) live in
`resources.json`, written only when env.ini changes; who holds one lives in meta.json's small
"taken" table. A command reads resources.json only when it lists resources or env.ini changed
since the last sync (`resources_synced`), so start-up does not grow with them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from .database import StoreDatabase
from .files import StoreWriteError, storage_of


class ResourceRecords(StoreDatabase):
    """Which resources exist and who holds each one."""

    def _taken(self) -> dict[str, dict[str, Any]]:
        return self._raw(self.META, "taken")

    def _merged(self, doc: dict[str, Any], taken: dict[str, dict[str, Any]]) -> dict[str, Any]:
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

    def _resources_sig(self) -> list[int] | None:
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

    def resources(self, rtype: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            taken = self._taken()
            docs = [
                self._merged(d, taken) for d in self._defs().values() if rtype is None or d["type"] == rtype
            ]
        docs.sort(key=lambda d: d["rid"])
        return docs

    def get_resource(self, rid: int) -> dict[str, Any] | None:
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
