"""An experiment's jobs as a table for spreadsheets and scripts (`aup-tui export`, `e` in the
dashboard): one row per job with its id, status, score, each parameter and each multi-result
label in its own column, the resource, the attempt, start, end and duration.

CSV has a header row; a missing value is an empty cell. JSON is a list of objects with the same
keys in the same order, numbers as numbers, a missing value as null; never NaN or Infinity.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import AupError
from .jobs import json_safe

if TYPE_CHECKING:
    from .store import TinyDBConnector

FORMATS = ("csv", "json")

#: the columns every export has, around the parameters and the results
HEAD = ("jid", "status", "score")
TAIL = ("resource", "attempt", "start", "end", "duration")


@dataclass(frozen=True)
class ExportTable:
    """The rows of one experiment's export: `columns` in order, each row a dict over them whose
    values are None, str, bool, int, finite float, or (a parameter's) list or dict."""

    eid: int
    name: str
    columns: list[str]
    rows: list[dict[str, Any]]


def export_table(connector: TinyDBConnector, eid: int) -> ExportTable:
    """Experiment `eid`'s jobs as rows (AupError when there is no such experiment)."""
    exp = connector.get_experiment(eid)
    if exp is None:
        raise AupError(f"no experiment {eid} in this .aup — `aup-tui status` shows the latest")
    jobs = connector.jobs(eid)
    params = _parameter_names(jobs)
    results = _result_columns(connector.get_labels(eid), jobs)
    taken = set(HEAD) | set(TAIL)
    param_cols = [_unique(p, "param", taken) for p in params]
    result_cols = [(i, _unique(label, "result", taken)) for i, label in results]
    prefix = f"{exp.get('resource')}:" if exp.get("resource") else ""
    rows = []
    for job in jobs:
        config = job.get("config") or {}
        values = job.get("values") or []
        start, end = _number(job.get("start")), _number(job.get("end"))
        resource = job.get("resource") or None
        if resource and prefix and resource.startswith(prefix):
            resource = resource[len(prefix) :]  # `cpu:cpu0` → `cpu0`, as the jobs table shows it
        attempts = job.get("attempts") or []
        row: dict[str, Any] = {"jid": job["jid"], "status": job["status"], "score": _number(job.get("score"))}
        row.update((col, json_safe(config.get(p))) for p, col in zip(params, param_cols))
        row.update((col, _number(values[i]) if i < len(values) else None) for i, col in result_cols)
        row.update(
            resource=resource,
            attempt=attempts[-1].get("attempt", len(attempts)) if attempts else None,
            start=_local_time(start),
            end=_local_time(end),
            duration=round(max(0.0, end - start), 3) if start is not None and end is not None else None,
        )
        rows.append(row)
    columns = [*HEAD, *param_cols, *(col for _, col in result_cols), *TAIL]
    return ExportTable(eid=eid, name=str(exp.get("name") or ""), columns=columns, rows=rows)


def _parameter_names(jobs: list[dict[str, Any]]) -> list[str]:
    """Every parameter any job has, in the order the proposer wrote them (the experiment's
    `parameter_config` order), then those only later jobs have (`tid`, `n_iterations`, …)."""
    names: dict[str, None] = {}
    for job in jobs:
        for key in job.get("config") or {}:
            names.setdefault(str(key), None)
    return list(names)


def _result_columns(labels: list[str], jobs: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(position in a job's reported values, column name) of the multi-result columns.

    Auptimizer's `multi_res_labels` name the values after the score (`#Auptimizer:0.9,12,3` with
    labels `["time", "flops"]`); when no job reports more values than there are labels, the
    labels name all of them (as the job detail's curve reads them). A reported value no label
    names is `value N` (N: its place in the line)."""
    widest = max((len(j.get("values") or []) for j in jobs), default=0)
    first = 1 if labels and widest > len(labels) else 0
    named = {first + i: str(label) for i, label in enumerate(labels)}
    score_only = first == 1 or not labels  # the first value is the score column already
    extra = [i for i in range(widest) if i not in named and not (i == 0 and score_only)]
    return sorted([*named.items(), *((i, f"value {i + 1}") for i in extra)])


def _unique(name: str, kind: str, taken: set[str]) -> str:
    """`name`, or `kind.name` when a column of that name exists already (a parameter `score`)."""
    column = name if name not in taken else f"{kind}.{name}"
    while column in taken:
        column = f"{kind}.{column}"
    taken.add(column)
    return column


def _number(value: Any) -> float | int | None:
    """A finite number as it is; anything else (None, NaN, ±inf from old records) None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _local_time(stamp: float | int | None) -> str | None:
    """A Unix time as ISO 8601 in local time with its offset (`2026-12-03T08:15:02+01:00`)."""
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds")


# -- files ------------------------------------------------------------------------------------


def export_format(fmt: str | None, path: str | None) -> str:
    """The format asked for, else the one `path`'s extension names (`.json`), else csv."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise AupError(f"unknown export format {fmt!r}: use csv or json")
        return fmt
    ext = os.path.splitext(path or "")[1].lower().lstrip(".")
    return ext if ext in FORMATS else "csv"


def default_filename(eid: int, name: str, fmt: str) -> str:
    """`<experiment name>-e<eid>.<fmt>`, the name made safe for a file (`./a b/x.json` → `x`)."""
    base = os.path.splitext(os.path.basename(name.rstrip("/\\")))[0]
    base = re.sub(r"[^\w.-]+", "_", base).strip("._")
    return f"{base}-e{eid}.{fmt}" if base else f"experiment-e{eid}.{fmt}"


def render(table: ExportTable, fmt: str) -> str:
    """The table as CSV (a header row, then one row per job) or as a JSON list of objects."""
    if fmt == "json":
        return json.dumps(table.rows, allow_nan=False, indent=1) + "\n"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow([_cell(row[c]) for c in table.columns])
    return out.getvalue()


def _cell(value: Any) -> str:
    """A CSV cell: empty for a missing value, a number in Python's shortest round-trip text,
    a list or object (a parameter's value) as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, allow_nan=False)
    return str(value)


def write_export(connector: TinyDBConnector, eid: int, path: str, fmt: str) -> int:
    """Write experiment `eid`'s export to `path` (replaced whole, never left half-written);
    returns the number of jobs. A path that can't be written is an AupError naming it."""
    table = export_table(connector, eid)
    text = render(table, fmt)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise AupError(f"can't write {path}: {exc.strerror or exc}") from None
    return len(table.rows)
