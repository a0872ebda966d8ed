"""Qlib's ``.bin`` feature file: little-endian float32, first value = start index into the calendar."""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np

from app.core.errors import StoreFormatError

_DTYPE = np.dtype("<f4")


def read_bin(path: Path, calendar_len: int) -> tuple[int, np.ndarray]:
    """Read one field of one instrument: ``(start_index, values)``; values are float32.

    Raises:
        StoreFormatError: the file is empty, truncated, or its start index/length do not fit the calendar.
    """
    problem = bin_problem(path.stat().st_size, None, calendar_len)
    if problem is None:
        raw = np.fromfile(path, dtype=_DTYPE)
        problem = bin_problem(raw.size * 4, float(raw[0]), calendar_len)
        if problem is None:
            return int(raw[0]), raw[1:]
    raise StoreFormatError(f"{path}: {problem}. {bin_fix(path)}")


def read_bin_header(path: str | Path) -> tuple[int, float | None]:
    """The file's size in bytes and its start index (None when shorter than 4 bytes); reads 4 bytes only.

    Raises:
        OSError: the file cannot be opened (``FileNotFoundError`` when it is absent).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        head = os.read(fd, 4)
        size = os.lseek(fd, 0, os.SEEK_END)  # cheaper than fstat's stat_result, for a check run on every job
    finally:
        os.close(fd)
    return size, (float(struct.unpack("<f", head)[0]) if len(head) == 4 else None)


def bin_problem(size: int, start: float | None, calendar_len: int) -> str | None:
    """What is wrong with a ``.bin`` file of ``size`` bytes whose first value is ``start`` (None: not read yet,
    so only the size is judged) in a store whose calendar has ``calendar_len`` days; None when it fits.

    A file holds 4 bytes of start index and 4 per day, at most as many days as the calendar has from the start
    index on. Fewer days than the instrument's span is not refused, so a file cut short to a whole number of
    values passes here: Qlib's ``FileFeatureStorage`` reads what is there (the later days come back missing, as
    for a delisted instrument), and a market's spans (an index's membership such as ``csi300.txt``) come from
    another source than the bars, so they may run past an instrument's last bar. ``qtrain data check`` warns
    when a file's days differ from the span in ``instruments/all.txt``, which Qlib's dump_bin and qtrain's
    writers both derive from the bars.
    """
    if size == 0:
        return "empty .bin file (0 bytes: no start index; expected 4 bytes of start index + 4 a day)"
    count, stray = divmod(size - 4, 4)
    if size % 4 != 0:
        have = f"{count} values and {stray} stray bytes" if size > 4 else "not even the start index"
        return (
            f"truncated .bin file ({size} bytes is not a whole number of float32 values, 4 bytes of start index "
            f"+ 4 a day: {have})"
        )
    if start is None:
        return None
    if not math.isfinite(start) or start != int(start) or not 0 <= start < calendar_len:
        return f"corrupt .bin file: start index {start!r} is not a calendar position (0..{calendar_len - 1})"
    room = calendar_len - int(start)
    if count > room:
        return (
            f"corrupt .bin file: {count} values from calendar index {int(start)} run past the calendar's "
            f"{calendar_len} days (expected at most {room} values, {4 + 4 * room} bytes; got {size} bytes: a file "
            "of another store, or a calendar cut short?)"
        )
    return None


def bin_fix(path: Path) -> str:
    """How to repair a broken feature file ``<store>/features/<symbol>/<field>.<freq>.bin``."""
    root, symbol = path.parent.parent.parent, path.parent.name
    return (
        f"Re-import {symbol.upper()} (`qtrain data import SRC --to {root}`, or Qlib's dump_bin for a Qlib store), "
        f"or remove {symbol.upper()} from {root / 'instruments'}/*.txt and delete {path.parent}/."
    )


def write_bin(path: Path, start: int, values: np.ndarray) -> None:
    """Write ``values`` (cast to float32) starting at calendar index ``start``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = np.empty(len(values) + 1, dtype=_DTYPE)
    out[0] = start
    out[1:] = values
    out.tofile(path)
