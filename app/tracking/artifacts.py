"""Objects <-> artifact files in open formats, chosen by type when saving and by extension when loading.

=========================================  ==========================  ===============================
object                                     artifact                    loaded back as
=========================================  ==========================  ===============================
pandas DataFrame                           ``<name>.parquet``          DataFrame
pandas Series (name and index kept)        ``<name>.parquet``          Series
dict, list, tuple, int, float, bool, None  ``<name>.json``             the JSON value (tuples -> lists)
matplotlib Figure                          ``<name>.png``              PNG bytes
pathlib.Path of a saved-model directory    ``<name>/`` (model.json..)  local Path of the directory
str                                        ``<name>.txt``              str
bytes                                      ``<name>.bin``              bytes
=========================================  ==========================  ===============================

A name that already ends in the format's extension keeps it; a str or bytes named with an extension
(``config.yaml``) is written under that name, and text extensions load back as str. Non-finite floats
inside JSON objects become ``null`` (strict JSON has no NaN/inf). Nothing is ever pickled: any other type
raises :class:`UnsupportedObjectError`. A Series is stored as a one-column table whose parquet schema
metadata carries ``qtrain.object = {"kind": "series", "name": ...}``; plain pandas reads it as a DataFrame.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, cast

from app.core.errors import ConfigError, UnsupportedObjectError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

MODEL_FILE = "model.json"  # app.models.base.MODEL_FILE; not imported so that tracking stays light
META_KEY = b"qtrain.object"
SERIES_COLUMN = "__series__"
PARQUET, JSON, PNG, TEXT, BINARY = ".parquet", ".json", ".png", ".txt", ".bin"
TEXT_SUFFIXES = frozenset({TEXT, ".log", ".md", ".yaml", ".yml", ".csv", ".toml", ".ini", ".py", ".diff"})
SUFFIXES = (PARQUET, JSON, PNG, TEXT, BINARY)
PNG_COMPRESS_LEVEL = 1  # zlib level: ~1/3 less encoding time than PIL's default 6 for ~5 % larger plots
SUPPORTED = (
    "pandas DataFrame/Series (parquet), dict/list/tuple/int/float/bool/None (JSON), matplotlib Figure (PNG), "
    "pathlib.Path of a saved-model directory holding model.json (uploaded as a folder), str (text), bytes (raw)"
)


@dataclass(frozen=True)
class StagedObject:
    """An object written to a local file (``is_dir`` False) or a saved-model folder to upload as it is."""

    artifact_name: str
    local_path: Path
    is_dir: bool


def check_name(name: str) -> str:
    """``name`` if it is a plain file name (no folders, not empty, not ``.``/``..``).

    Raises:
        ConfigError: otherwise, with the fix (pass folders through ``artifact_path``).
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(
            f"artifact name {name!r} is not a plain file name; use a name like 'pred' and put folders in "
            "artifact_path (save_objects(artifact_path='sub/dir', pred=...))"
        )
    return name


def stage_object(name: str, obj: object, directory: Path) -> StagedObject:
    """Write ``obj`` under ``directory`` in its open format (see the module table); model folders stay put.

    Raises:
        UnsupportedObjectError: ``obj`` has a type with no open format here (it is never pickled).
        ConfigError: the object has that type but cannot be written (e.g. non-string parquet column names).
    """
    check_name(name)
    pd = _pandas_if_loaded()
    if pd is not None and isinstance(obj, (pd.DataFrame, pd.Series)):
        path = directory / _with_suffix(name, PARQUET)
        _write_parquet(name, obj, path)
        return StagedObject(path.name, path, False)
    figure = _figure_type()
    if figure is not None and isinstance(obj, figure):
        path = directory / _with_suffix(name, PNG)
        cast(Any, obj).savefig(path, format="png", pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
        return StagedObject(path.name, path, False)
    if isinstance(obj, Path):
        return StagedObject(name, _model_dir(name, obj), True)
    if isinstance(obj, str):
        path = directory / (name if PurePosixPath(name).suffix else name + TEXT)
        path.write_text(obj, encoding="utf-8")
        return StagedObject(path.name, path, False)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        path = directory / (name if PurePosixPath(name).suffix else name + BINARY)
        path.write_bytes(bytes(obj))
        return StagedObject(path.name, path, False)
    if obj is None or isinstance(obj, (dict, list, tuple, int, float, bool)) or _is_numpy_scalar(obj):
        path = directory / _with_suffix(name, JSON)
        text = json.dumps(to_json_value(obj, name), indent=2, ensure_ascii=False, allow_nan=False)
        path.write_text(text + "\n", encoding="utf-8")
        return StagedObject(path.name, path, False)
    raise UnsupportedObjectError(
        f"save_objects({name}=...) got a {type(obj).__module__}.{type(obj).__qualname__}, which has no open format "
        f"here (qtrain never pickles). Supported: {SUPPORTED}. Convert it (e.g. a model: model.save(dir), then "
        f"save_objects({name}=dir))."
    )


def read_artifact(path: Path) -> object:
    """Load an artifact file or folder written by :func:`stage_object`, by its extension.

    Raises:
        ConfigError: a parquet or JSON file that cannot be parsed.
    """
    if path.is_dir():
        return path
    suffix = path.suffix.lower()
    if suffix == PARQUET:
        return _read_parquet(path)
    if suffix == JSON:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigError(f"artifact {path.name} is not valid JSON ({exc})") from exc
    if suffix in TEXT_SUFFIXES:
        return path.read_text(encoding="utf-8")
    return path.read_bytes()


def candidate_names(name: str) -> list[str]:
    """Artifact names ``load_object(name)`` may mean: the name itself, then ``name`` + each known extension."""
    if PurePosixPath(name).suffix.lower() in SUFFIXES:
        return [name]
    return [name, *(name + suffix for suffix in SUFFIXES)]


def to_json_value(obj: object, where: str) -> Any:
    """A JSON-ready copy of ``obj``: numpy scalars/arrays unwrapped, dates as ISO text, NaN/inf as None.

    Raises:
        UnsupportedObjectError: a value (or dict key) JSON cannot hold, named by its path from ``where``.
    """
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        log.debug("%s is %r; stored as JSON null", where, obj)
        return None
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if not isinstance(key, (str, int, float, bool)):
                raise UnsupportedObjectError(
                    f"{where} has a key of type {type(key).__name__} ({key!r}); JSON keys must be str or numbers"
                )
            out[str(key)] = to_json_value(value, f"{where}[{key!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_json_value(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (dt.date, dt.datetime, dt.time)):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(obj, numpy.ndarray):
        return to_json_value(obj.tolist(), where)
    if _is_numpy_scalar(obj):
        return to_json_value(obj.item(), where)  # type: ignore[attr-defined]
    raise UnsupportedObjectError(
        f"{where} holds a {type(obj).__module__}.{type(obj).__qualname__}, which JSON cannot store; "
        "use str/int/float/bool/None, lists and dicts (numpy scalars/arrays and dates are converted)"
    )


def _with_suffix(name: str, suffix: str) -> str:
    return name if name.lower().endswith(suffix) else name + suffix


def _pandas_if_loaded() -> Any:
    # A DataFrame can only exist once pandas is imported, so there is no need to import it here.
    return sys.modules.get("pandas")


def _figure_type() -> type | None:
    module = sys.modules.get("matplotlib.figure")
    figure: type | None = getattr(module, "Figure", None)
    return figure


def _is_numpy_scalar(obj: object) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(obj, numpy.generic) and not isinstance(obj, (numpy.str_, numpy.bytes_))


def _model_dir(name: str, path: Path) -> Path:
    if path.is_dir() and (path / MODEL_FILE).is_file():
        return path
    what = "a folder without model.json" if path.is_dir() else "not a folder"
    raise UnsupportedObjectError(
        f"save_objects({name}=Path({str(path)!r})): {what}. A Path must be a saved-model directory (model.save(dir) "
        "writes model.json plus native files); log other files with Recorder.log_artifact(path)."
    )


def _write_parquet(name: str, obj: pd.DataFrame | pd.Series, path: Path) -> None:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta: dict[str, Any] | None = None
    if isinstance(obj, pd.Series):
        series_name = obj.name
        column = series_name if isinstance(series_name, str) else SERIES_COLUMN
        meta = {"kind": "series", "name": _json_name(series_name)}
        frame = obj.to_frame(name=column)
    else:
        frame = obj
    try:
        table = pa.Table.from_pandas(frame)
    except (TypeError, ValueError, pa.ArrowException) as exc:
        raise ConfigError(
            f"cannot write {name} as parquet: {exc}. Each column must hold one type (convert mixed object "
            "columns, e.g. df[col].astype(str)) and column labels must be unique."
        ) from exc
    if meta is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta)})
    pq.write_table(table, path)


def _json_name(name: object) -> object:
    if name is None or isinstance(name, (str, int, float, bool)):
        return name
    if isinstance(name, tuple):
        return [_json_name(part) for part in name]
    return str(name)


def _read_parquet(path: Path) -> pd.DataFrame | pd.Series:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise ConfigError(f"artifact {path.name} is not a readable parquet file ({exc})") from exc
    frame: pd.DataFrame = table.to_pandas()
    raw = (table.schema.metadata or {}).get(META_KEY)
    meta = json.loads(raw) if raw else {}
    if meta.get("kind") == "series" and frame.shape[1] == 1:
        series: pd.Series = frame.iloc[:, 0]
        name = meta.get("name")
        series.name = tuple(name) if isinstance(name, list) else name
        return series
    return frame
