"""The job table's filter text: words match anywhere in a row, `column<op>value` one column.

`failed cpu1` keeps rows containing both words. `x>0.5`, `lr<=1e-3`, `score<10`, `status=failed`,
`opt=adam` compare one column: numbers as numbers, text case-insensitively; `column:text` means the
column contains the text. A term naming no column of the table is matched as a plain word, so
`a=b` still finds rows that contain it.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

_TERM = re.compile(r"^([^\s<>=!:]+)(<=|>=|!=|=|<|>|:)(.+)$")
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class Term:
    """One word of the filter: `column` None matches `text` anywhere in the row."""

    text: str
    column: str | None = None
    op: str = ":"


def parse_filter(text: str, columns: Collection[str]) -> list[Term]:
    """The terms of `text`; `columns` are the names a term may compare (lower-case)."""
    terms = []
    for word in text.lower().split():
        m = _TERM.match(word)
        if m and m.group(1) in columns:
            terms.append(Term(m.group(3), m.group(1), m.group(2)))
        else:
            terms.append(Term(word))
    return terms


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def matches(terms: list[Term], values: Mapping[str, Any], hay: str) -> bool:
    """Whether a row passes every term: `values` its raw value per column, `hay` its text, lower-case."""
    for term in terms:
        if term.column is None:
            if term.text not in hay:
                return False
            continue
        value = values.get(term.column)
        if value is None:
            return False
        if term.op == ":":
            if term.text not in str(value).lower():
                return False
            continue
        a, b = _number(value), _number(term.text)
        compare = _COMPARE[term.op]
        if a is not None and b is not None:
            if not compare(a, b):
                return False
        elif term.op in ("=", "!="):
            if not compare(str(value).lower(), term.text):
                return False
        else:
            return False
    return True
