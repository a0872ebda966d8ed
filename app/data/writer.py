"""Write a market store in Qlib's binary layout, atomically (build aside, then swap in)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from app.data.binfile import write_bin
from app.data.instruments import Span, write_instruments


def write_store(
    root: Path,
    bars: Mapping[str, pd.DataFrame],
    markets: Mapping[str, Mapping[str, Sequence[Span]]],
    calendar: pd.DatetimeIndex | None = None,
    freq: str = "day",
) -> None:
    """Write ``bars`` (``{SYMBOL: frame indexed by date, one float column per field}``) into ``root``.

    Each instrument's series runs from its first to its last date, one value per calendar day, NaN on
    days it has no bar (suspensions). ``calendar`` defaults to the union of all bar dates. ``markets``
    maps a market name to ``{SYMBOL: [(start, end), ...]}``.
    """
    if calendar is None:
        calendar = pd.DatetimeIndex(sorted(set().union(*(frame.index for frame in bars.values()))))
    (root / "calendars").mkdir(parents=True, exist_ok=True)
    (root / "calendars" / f"{freq}.txt").write_text("".join(f"{d:%Y-%m-%d}\n" for d in calendar), encoding="utf-8")
    for name, spans in markets.items():
        write_instruments(root / "instruments" / f"{name}.txt", spans)
    for symbol, frame in bars.items():
        if frame.empty:
            continue
        lo = int(calendar.searchsorted(frame.index[0]))
        hi = int(calendar.searchsorted(frame.index[-1]))
        dense = frame.reindex(calendar[lo : hi + 1])
        folder = root / "features" / symbol.lower()
        for field in frame.columns:
            write_bin(folder / f"{field.lower()}.{freq}.bin", lo, dense[field].to_numpy(dtype=np.float32))


@contextmanager
def staged_store(dest: Path) -> Iterator[Path]:
    """Yield an empty staging directory beside ``dest``; on success it replaces ``dest``.

    On any exception the staging directory is removed and ``dest`` is left exactly as it was.
    """
    dest = dest.resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-", dir=dest.parent))
    try:
        yield staging
        _swap_in(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_in(staging: Path, dest: Path) -> None:
    if not dest.exists():
        os.rename(staging, dest)
        return
    retired = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(dest, retired)
    try:
        os.rename(staging, dest)
    except BaseException:
        os.rename(retired, dest)
        raise
    shutil.rmtree(retired, ignore_errors=True)
