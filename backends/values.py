"""JSON values as the config checks see them: whole and finite numbers, and how a value is
named in an error message (shared by experiment.json's, env.ini's and early stopping's checks)."""

from __future__ import annotations

import json
import math
from typing import Any, TypeGuard


def is_int(value: object) -> TypeGuard[int]:
    """A whole number (JSON's true/false are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite number (JSON's true/false are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def json_key(value: Any) -> str:
    """A JSON value as a comparable, hashable string: a choice matches only the same JSON value
    (`true` is not `1`, `1.0` is not `1`), and lists and objects compare by content."""
    return json.dumps(value, sort_keys=True)


def value_kind(value: Any) -> str:
    """What kind of JSON value it is, as a person reads it ("an object", "a list", …)."""
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "true/false",
        type(None): "null",
        int: "a number",
        float: "a number",
    }
    return names.get(type(value), type(value).__name__)


def value_text(value: Any) -> str:
    """The value as JSON text, as the person wrote it."""
    return json.dumps(value, default=str)
