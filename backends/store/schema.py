"""What the store's documents look like: the job states that are not over, the rule for the
best job, and the check every document read goes through (a damaged one is reported, not trusted)."""

from __future__ import annotations

import re
from typing import Any

from ..status import JobStatus

#: Job states that are not over yet; the others (FINISHED, FAILED, STOPPED, EARLY_STOPPED,
#: INTERRUPTED) are final.
LIVE_STATES = tuple(s for s in JobStatus if s.is_live)


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

_NONE: type = type(None)
_INT: frozenset[type] = frozenset({int})
_STR: frozenset[type] = frozenset({str})
_NUM: frozenset[type] = frozenset({int, float})
_LIST: frozenset[type] = frozenset({list})
_OWNER: frozenset[type] = frozenset({list, _NONE})
#: table → ((key, the exact types its value may have), …); checked on every document read
_SPEC: dict[str, dict[str, frozenset[type]]] = {
    "resources": {"rid": _INT, "name": _STR, "type": _STR},
    "taken": {"rid": _INT, "owner": _LIST},
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
_SCHEMA: dict[str, tuple[tuple[str, frozenset[type]], ...]] = {
    tbl: tuple(spec.items()) for tbl, spec in _SPEC.items()
}
_ID_KEYS = {"resources": "rid", "taken": "rid", "experiments": "eid", "jobs": "jid"}
_STATUS = re.compile(r"[A-Za-z_]{1,32}")


def validate_document(tbl: str, doc_id: str, doc: dict[str, Any]) -> None:
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
