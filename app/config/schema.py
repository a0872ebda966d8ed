"""Type-check a resolved task spec against the code it will build, before anything is trained.

The schema is the code itself: every ``_target_`` node is checked against the signature and type hints of the
callable it names, so a misspelled key or a value of the wrong type fails with its key path
(``model.hidden_size: expected int, got 'big' (str)``) and the config cannot drift from the classes.
Types we cannot judge from JSON (objects, callables, forward references that do not resolve) are accepted here
and left to the constructor.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from app.core.errors import ConfigError
from app.core.typecheck import describe, matches, type_hints

_UNCHECKED = object()  # a hint we do not judge


def check_spec_types(body: Mapping[str, Any], path: str = "") -> None:
    """Walk a resolved spec; check each ``_target_`` node's keys and value types against its target.

    Raises:
        ConfigError: an unknown target, a key the target does not take, or a value of the wrong type; the
            message names the key path.
    """
    _walk(body, path)


def _walk(value: Any, path: str) -> None:
    if isinstance(value, Mapping):
        if "_target_" in value:
            _check_node(value, path)
        for key, item in value.items():
            if not str(key).startswith("_"):
                _walk(item, _join(path, str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, f"{path}[{i}]")


def _check_node(node: Mapping[str, Any], path: str) -> None:
    target = node["_target_"]
    where = path or "spec"
    if not isinstance(target, str) or "." not in target:
        raise ConfigError(f"{_join(path, '_target_')}: {target!r} is not a dotted import path like pkg.module.Name")
    func = _import(target, where)
    params, hints, takes_any = _signature(func)
    given = [k for k in node if not str(k).startswith("_")]
    for key in given:
        if key not in params:
            if takes_any:
                continue
            close = difflib.get_close_matches(key, params, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{_join(path, key)}: {target} takes no parameter {key!r}; {hint}"
                f"it takes: {', '.join(params) or 'none'}"
            )
        expected = hints.get(key, _UNCHECKED)
        if expected is not _UNCHECKED and not matches(node[key], expected, accept=_is_target_node):
            raise ConfigError(
                f"{_join(path, key)}: expected {describe(expected)}, got {node[key]!r} ({type(node[key]).__name__})"
            )
    partial = bool(node.get("_partial_", False))
    missing = [name for name, required in params.items() if required and name not in node]
    if missing and not partial:
        raise ConfigError(f"{where}: {target} needs {', '.join(missing)}; add {missing[0]}: VALUE under {where}")


def _import(target: str, where: str) -> Any:
    module_name, _, attr = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}._target_: cannot import {module_name!r} ({exc}); check the spelling") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        names = [n for n in dir(module) if not n.startswith("_")]
        close = difflib.get_close_matches(attr, names, n=1)
        hint = f"; did you mean {module_name}.{close[0]}?" if close else ""
        raise ConfigError(f"{where}._target_: {module_name} has no {attr!r}{hint}") from None


def _signature(func: Callable[..., Any]) -> tuple[dict[str, bool], dict[str, Any], bool]:
    """(parameter -> required, parameter -> type hint, accepts **kwargs) of a class or function."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return {}, {}, True
    params: dict[str, bool] = {}
    takes_any = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            takes_any = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            params[p.name] = p.default is p.empty
    owner = func.__init__ if inspect.isclass(func) and not dataclasses.is_dataclass(func) else func
    return params, type_hints(owner, list(params)), takes_any


def _is_target_node(value: Any) -> bool:
    """A node built into an object by its ``_target_``: its own keys are checked where it stands."""
    return isinstance(value, Mapping) and "_target_" in value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
