"""Canonical JSON: one text (and hash) per value, whatever the key order or number spelling.

Used for task-spec hashes (dedupe in the task pool) and feature-cache keys. Rules: keys sorted, no spaces,
integral floats written as integers (``1.0`` and ``1`` are the same setting), tuples as lists, paths and
dates as strings; NaN, infinities, non-string keys and other types are errors naming the offending path.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.core.errors import ConfigError

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


def normalise(value: Any, where: str = "value") -> JsonValue:
    """``value`` as plain JSON data under the rules above.

    Raises:
        ConfigError: naming ``where`` (e.g. ``spec.model.lr``) and the offending value.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where} is {value}, which JSON cannot represent; use a finite number or a string")
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if isinstance(value, Mapping):
        out: dict[str, JsonValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where} has a non-string key {key!r}; JSON keys are strings")
            out[key] = normalise(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [normalise(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return [normalise(item, f"{where}[]") for item in sorted(value, key=repr)]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dt.date):  # datetime and pd.Timestamp too
        return value.isoformat()
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return normalise(value.item(), where)
    raise ConfigError(
        f"{where} = {value!r} of type {type(value).__name__} is not JSON; "
        "use str, int, float, bool, null, a list, a mapping, a path or a date"
    )


def canonical_json(value: Any, where: str = "value") -> str:
    """The canonical JSON text of ``value``."""
    return json.dumps(normalise(value, where), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(value: Any, where: str = "value") -> str:
    """Hex sha256 of :func:`canonical_json`."""
    return sha256_text(canonical_json(value, where))


def sha256_text(text: str) -> str:
    """Hex sha256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
