"""Qlib's ``.bin`` feature file: little-endian float32, first value = start index into the calendar."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.errors import StoreFormatError

_DTYPE = np.dtype("<f4")
_FIX = "Re-import the instrument (qtrain data import ... --to STORE) or delete the file."


def read_bin(path: Path, calendar_len: int) -> tuple[int, np.ndarray]:
    """Read one field of one instrument: ``(start_index, values)``; values are float32.

    Raises:
        StoreFormatError: the file is empty, truncated, or its start index/length do not fit the calendar.
    """
    size = path.stat().st_size
    if size % 4 != 0:
        raise StoreFormatError(
            f"{path}: truncated .bin file ({size} bytes is not a whole number of float32 values). {_FIX}"
        )
    if size == 0:
        raise StoreFormatError(f"{path}: empty .bin file (no start index). {_FIX}")
    raw = np.fromfile(path, dtype=_DTYPE)
    first = float(raw[0])
    if not np.isfinite(first) or first != int(first) or first < 0:
        raise StoreFormatError(
            f"{path}: corrupt .bin file: start index {first!r} is not a calendar position (0..{calendar_len - 1}). "
            f"{_FIX}"
        )
    start = int(first)
    count = raw.size - 1
    if start + count > calendar_len:
        raise StoreFormatError(
            f"{path}: corrupt .bin file: {count} values from calendar index {start} run past the calendar's "
            f"{calendar_len} days. Check calendars/day.txt belongs to this store, or re-import the instrument."
        )
    return start, raw[1:]


def write_bin(path: Path, start: int, values: np.ndarray) -> None:
    """Write ``values`` (cast to float32) starting at calendar index ``start``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = np.empty(len(values) + 1, dtype=_DTYPE)
    out[0] = start
    out[1:] = values
    out.tofile(path)
