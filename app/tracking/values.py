"""What params, tags and metrics become before they reach MLflow.

- Params: nested mappings are flattened with dots (``{"model": {"kwargs": {"lr": 0.1}}}`` ->
  ``model.kwargs.lr``); values are stringified (strings as they are, lists/tuples as JSON, everything else
  with ``str``) and truncated to MLflow's limit (6000 characters for a param value, 8000 for a tag value).
- Metrics: values must be real numbers. NaN is kept (MLflow's SQL store and REST API record it as NaN);
  +/-inf is skipped with a debug log, because MLflow's SQL store silently clips it to +/-1.8e308 and
  other backends differ, so a stored value would be wrong rather than missing.

MLflow is not imported here; the limits are copied from ``mlflow.utils.validation`` (a test checks them).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

from app.core.errors import ConfigError

log = logging.getLogger(__name__)

MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_ENTITY_KEY_LENGTH = 250
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
TRUNCATED = "...[truncated]"


def stringify(value: object) -> str:
    """The text MLflow stores for a param or tag value: str as is, list/tuple/mapping as JSON, else ``str``."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, Mapping)):
        try:
            return json.dumps(value, default=str, ensure_ascii=False)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def truncate(key: str, text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (ending in ``...[truncated]``), with a warning naming ``key``."""
    if len(text) <= limit:
        return text
    log.warning("value of <%s> has %d characters; truncated to MLflow's limit of %d", key, len(text), limit)
    return text[: limit - len(TRUNCATED)] + TRUNCATED


def flatten_params(params: Mapping[str, object], prefix: str = "") -> dict[str, str]:
    """Flatten nested mappings with dots and stringify/truncate the leaves (see the module docstring).

    An empty nested mapping is kept as ``"{}"`` so that it still shows up.

    Raises:
        ConfigError: a key longer than MLflow's 250 characters, or two spellings of the same flat key
            (``{"a.b": 1, "a": {"b": 2}}``).
    """
    flat: dict[str, str] = {}
    _flatten_into(flat, params, prefix)
    return flat


def _flatten_into(flat: dict[str, str], params: Mapping[str, object], prefix: str) -> None:
    for raw_key, value in params.items():
        key = f"{prefix}{raw_key}"
        if isinstance(value, Mapping) and value:
            _flatten_into(flat, value, key + ".")
            continue
        if len(key) > MAX_ENTITY_KEY_LENGTH:
            raise ConfigError(
                f"param name {key[:60]!r}... has {len(key)} characters; MLflow allows {MAX_ENTITY_KEY_LENGTH}. "
                "Shorten the key or log the value as an artifact with save_objects."
            )
        if key in flat:
            raise ConfigError(
                f"param {key!r} is given twice after flattening nested keys with dots; "
                "rename one of them (e.g. avoid mixing 'a.b' and {'a': {'b': ...}})."
            )
        flat[key] = truncate(key, stringify(value), MAX_PARAM_VAL_LENGTH)


def tag_values(tags: Mapping[str, object]) -> dict[str, str]:
    """Stringified tag values truncated to MLflow's 8000 characters.

    Raises:
        ConfigError: a tag name longer than MLflow's 250 characters.
    """
    out: dict[str, str] = {}
    for key, value in tags.items():
        if len(key) > MAX_ENTITY_KEY_LENGTH:
            raise ConfigError(f"tag name {key[:60]!r}... is longer than MLflow's {MAX_ENTITY_KEY_LENGTH} characters")
        out[key] = truncate(key, stringify(value), MAX_TAG_VAL_LENGTH)
    return out


@dataclass(frozen=True)
class CleanMetrics:
    """Metrics ready for MLflow (``values``) and the keys left out because their value was infinite."""

    values: dict[str, float]
    skipped: tuple[str, ...]


def clean_metrics(metrics: Mapping[str, object]) -> CleanMetrics:
    """Convert metric values to float, keep NaN, leave out +/-inf (see the module docstring).

    Raises:
        ConfigError: a value that is not a real number (a string, None, a list, ...), naming its key.
    """
    values: dict[str, float] = {}
    skipped: list[str] = []
    for key, value in metrics.items():
        number = _to_float(key, value)
        if math.isinf(number):
            skipped.append(key)
        else:
            values[key] = number
    if skipped:
        log.debug("metrics %s are infinite and were not logged (MLflow cannot store inf)", ", ".join(skipped))
    return CleanMetrics(values, tuple(skipped))


def _to_float(key: str, value: object) -> float:
    if isinstance(value, (str, bytes)) or value is None:
        raise ConfigError(_not_a_number(key, value))
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigError(_not_a_number(key, value)) from exc


def _not_a_number(key: str, value: object) -> str:
    return (
        f"metric {key!r} has value {value!r} ({type(value).__name__}); metrics must be real numbers "
        "(int, float, numpy scalar, 0-d tensor). Log text with set_tags or log_params instead."
    )
