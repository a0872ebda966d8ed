"""A disk cache of computed frames (features, views), keyed by a JSON-able description of how they were built.

Files are ``<root>/<sha256 of the canonical key JSON>.arrow``: Arrow IPC (Feather v2), uncompressed, so a
cached frame is memory-mapped and loads in a fraction of a second (parquet's decoding took ~10x longer).
A file is written under a temporary name in the same folder and renamed into place (``os.replace``), so a
reader sees either no file or a whole one, and two processes building the same key at once both succeed
(the last rename wins; both wrote the same frame). Column labels, including ``(group, name)`` pairs, travel
in the Arrow schema metadata. No pickle.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather

from app.core import canonical

log = logging.getLogger(__name__)

META_KEY = b"qtrain.cache.key"
META_COLUMNS = b"qtrain.cache.columns"
FORMAT_VERSION = 2
SUFFIX = ".arrow"


class FeatureCache:
    """Frames cached under ``root`` by key.

    The key must describe everything the frame depends on (handler config, date range, a store
    fingerprint from :func:`app.data.fingerprint.store_fingerprint`, ...): equal keys mean equal frames.
    ``hits`` and ``misses`` count this object's :meth:`get_or_build` outcomes (a rebuilt unreadable file is a
    miss), so a caller can tell whether a step was served from the cache.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def path_for(self, key: Mapping[str, object]) -> Path:
        """Where the frame for ``key`` is (or would be) stored.

        Raises:
            ConfigError: ``key`` holds a value JSON cannot represent.
        """
        return self.root / f"{key_digest(key)}{SUFFIX}"

    def get_or_build(self, key: Mapping[str, object], build: Callable[[], pd.DataFrame]) -> tuple[pd.DataFrame, bool]:
        """The cached frame for ``key`` and ``True``, or ``build()``'s frame (now cached) and ``False``.

        An unreadable or mismatched cache file is logged as a warning and rebuilt.

        Raises:
            ConfigError: ``key`` holds a value JSON cannot represent.
        """
        text = canonical_json(key)
        path = self.root / f"{canonical.sha256_text(text)}{SUFFIX}"
        kept = _LOADED.get(path)
        if kept is not None:
            self.hits += 1
            return kept, True
        if path.is_file():
            try:
                frame = _read(path, text)
            except (OSError, pa.ArrowException, ValueError, KeyError, TypeError) as exc:
                log.warning("cache file %s is unreadable (%s); rebuilding it", path, exc)
            else:
                self.hits += 1
                _LOADED.put(path, frame)
                return frame, True
        self.misses += 1
        frame = build()
        _write_atomic(path, frame, text)
        _LOADED.put(path, frame)
        log.debug("cached %d rows at %s", len(frame), path)
        return frame, False


class LoadedFrames:
    """Frames this process loaded or built, by cache file, while the file is unchanged (size, mtime).

    A sweep in one process or a warm worker then reads each cached frame once. Sharing one frame between tasks is
    safe because each lookup gets its own shallow copy and pandas (>= 3)
    copies on write. The oldest frames are dropped beyond ``limit_bytes``.
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._frames: OrderedDict[Path, tuple[tuple[int, int], pd.DataFrame, int]] = OrderedDict()

    def get(self, path: Path) -> pd.DataFrame | None:
        entry = self._frames.get(path)
        if entry is None:
            return None
        if entry[0] != _stamp(path):
            del self._frames[path]
            return None
        self._frames.move_to_end(path)
        return entry[1].copy(deep=False)  # shares the data; a write to either copies first (copy on write)

    def put(self, path: Path, frame: pd.DataFrame) -> None:
        stamp = _stamp(path)
        if stamp == (-1, -1):
            return
        self._frames[path] = (stamp, frame.copy(deep=False), int(frame.memory_usage(index=True, deep=False).sum()))
        self._frames.move_to_end(path)
        while len(self._frames) > 1 and sum(size for *_, size in self._frames.values()) > self.limit_bytes:
            self._frames.popitem(last=False)

    def clear(self) -> None:
        self._frames.clear()


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


_LOADED = LoadedFrames(limit_bytes=4 << 30)


def forget_loaded_frames() -> None:
    """Drop the frames this process keeps in memory (the next lookups read the files again)."""
    _LOADED.clear()


def canonical_json(key: Mapping[str, object]) -> str:
    """``key`` as canonical JSON (:mod:`app.core.canonical`: sorted keys, paths and dates as strings).

    Raises:
        ConfigError: a value JSON cannot represent, naming its key.
    """
    return canonical.canonical_json(key, "cache key")


def key_digest(key: Mapping[str, object]) -> str:
    """Hex sha256 of :func:`canonical_json` of ``key``."""
    return canonical.digest(key, "cache key")


def _write_atomic(path: Path, frame: pd.DataFrame, key_text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = [_flat_name(c) for c in frame.columns]
    if len(set(flat)) < len(flat):  # e.g. ("a:b", "c") and ("a", "b:c"); the metadata restores the real labels
        flat = [f"{name}#{i}" for i, name in enumerate(flat)]
    table = pa.Table.from_pandas(frame.set_axis(flat, axis=1), preserve_index=True)
    columns_info = {
        "version": FORMAT_VERSION,
        "nlevels": frame.columns.nlevels,
        "names": list(frame.columns.names),
        "columns": [list(c) if isinstance(c, tuple) else c for c in frame.columns],
    }
    meta = dict(table.schema.metadata or {})
    meta[META_KEY] = key_text.encode("utf-8")
    meta[META_COLUMNS] = json.dumps(columns_info, default=str).encode("utf-8")
    table = table.replace_schema_metadata(meta)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            # No fsync: the cache is rebuildable, and a file torn by a crash fails to read and is rebuilt.
            feather.write_feather(table, fh, compression="uncompressed")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read(path: Path, key_text: str) -> pd.DataFrame:
    table = feather.read_table(path, memory_map=True)
    meta = table.schema.metadata or {}
    stored_key = meta[META_KEY].decode("utf-8")
    if stored_key != key_text:
        raise ValueError(f"the file was written for another key ({stored_key[:80]}...)")
    info = json.loads(meta[META_COLUMNS])
    if info["version"] != FORMAT_VERSION:
        raise ValueError(f"cache format {info['version']}, expected {FORMAT_VERSION}")
    frame: pd.DataFrame = table.to_pandas()
    columns: list[object] = info["columns"]
    if info["nlevels"] > 1:
        frame.columns = pd.MultiIndex.from_tuples([tuple(c) for c in columns], names=info["names"])  # type: ignore[arg-type]
    else:
        frame.columns = pd.Index(columns, name=info["names"][0])
    return frame


def _flat_name(column: object) -> str:
    return ":".join(map(str, column)) if isinstance(column, tuple) else str(column)
