"""Damage to meta.json: a damaged one is moved aside and what it held rebuilt from the
`e<eid>/` folders (experiment records, id counters)."""

from __future__ import annotations

from typing import Any

from ..status import ExperimentStatus
from .files import StoreCorruptError, StoreWriteError, storage_of
from .resources import ResourceRecords


class MetaRepair(ResourceRecords):
    """Rebuilds meta.json's experiments and counters from the experiment folders."""

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

    def _rebuild_experiments(self) -> None:
        """Put back into meta.json the experiments only their folders remember (caller holds `_locked`)."""
        known = self._raw(self.META, "experiments")
        for eid in sorted(self._eids_on_disk()):
            mirror = self._read_or_none(self._exp_file(eid), "experiment").get("1")
            if str(eid) in known and not (
                mirror
                and known[str(eid)].get("status") == ExperimentStatus.RUNNING
                and mirror.get("status") != ExperimentStatus.RUNNING
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
                    "status": ExperimentStatus.INTERRUPTED,
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

    def _read_or_none(self, relpath: str, tbl: str) -> dict[str, dict[str, Any]]:
        """A table of a file that may be missing or damaged ({} then)."""
        try:
            return self._raw(relpath, tbl)
        except StoreCorruptError:
            return {}
