"""Feature engine: Qlib expression strings evaluated over a :class:`~app.data.panel.Panel` with Qlib's numbers.

Exports resolve lazily so that parsing/validating expressions does not pay for numba's import.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "evaluate": "app.features.engine",
    "required_fields": "app.features.engine",
    "OPERATORS": "app.features.parser",
    "Call": "app.features.parser",
    "Const": "app.features.parser",
    "Field": "app.features.parser",
    "Node": "app.features.parser",
    "parse": "app.features.parser",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'app.features' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
