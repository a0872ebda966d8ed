"""Does a value fit a type hint? One answer for the config checks (``app.config.schema``, JSON values before anything
is built) and the models' own field checks (``app.models.base.check_hyperparameters``)."""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def type_hints(obj: Any, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The resolvable type hints of a class (its dataclass fields or ``__init__``) or function.

    Hints naming something only imported for type checkers are left out rather than failing the rest.
    """
    try:
        hints = typing.get_type_hints(obj)
    except Exception:
        hints = _hints_one_by_one(obj)
    return {k: v for k, v in hints.items() if names is None or k in names}


def _hints_one_by_one(obj: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for klass in reversed(getattr(obj, "__mro__", [obj])):
        raw.update(getattr(klass, "__annotations__", {}))
    module = sys.modules.get(getattr(obj, "__module__", ""), None)
    scope = dict(vars(module)) if module else {}
    out = {}
    for name, annotation in raw.items():
        try:
            out[name] = eval(annotation, scope) if isinstance(annotation, str) else annotation
        except Exception:
            continue
    return out


def matches(value: Any, hint: Any, accept: Callable[[Any], bool] | None = None) -> bool:
    """Whether ``value`` fits ``hint`` (int, float, bool, str, Path, Literal, unions, sequences, mappings,
    classes). An int fits a float; a bool never fits a number. ``accept(value)`` True short-cuts any value
    (e.g. a config node that will be built into an object)."""
    if accept is not None and accept(value):
        return True
    if hint is Any or hint is object:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a, accept) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is Path:
        return isinstance(value, str | Path)
    container = origin if origin is not None else hint
    if isinstance(container, type) and issubclass(container, Mapping):
        return isinstance(value, Mapping)
    if isinstance(container, type) and issubclass(container, Sequence) and not issubclass(container, str):
        if not isinstance(value, list | tuple):
            return False
        variadic = container is not tuple or (len(args) == 2 and args[1] is Ellipsis)
        if args and variadic:
            return all(matches(v, args[0], accept) for v in value)
        if args:
            return len(args) == len(value) and all(matches(v, a, accept) for v, a in zip(value, args, strict=True))
        return True
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # callables, type variables, ...: not judged


def describe(hint: Any) -> str:
    """A short human name for ``hint`` (``int``, ``str | None``, ``one of 'a', 'b'``)."""
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("collections.abc.", "")
