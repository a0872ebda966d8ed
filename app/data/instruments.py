"""Instrument files ``instruments/<market>.txt``: ``SYMBOL<TAB>START<TAB>END`` a line, spans may repeat."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from app.core.errors import StoreFormatError

Span = tuple[pd.Timestamp, pd.Timestamp]
Membership = dict[str, list[Span]]


def read_instruments(path: Path) -> Membership:
    """Parse an instruments file into ``{SYMBOL: [(start, end), ...]}`` (symbols upper-case, spans sorted).

    Raises:
        StoreFormatError: a line does not have a symbol and two dates, or a span ends before it starts.
    """
    spans: Membership = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 3:
                raise StoreFormatError(
                    f"{path} line {lineno}: expected 'SYMBOL<TAB>START<TAB>END', got {line.rstrip()!r}. "
                    "Fix or remove the line."
                )
            symbol, raw_start, raw_end = parts
            try:
                start, end = pd.Timestamp(raw_start), pd.Timestamp(raw_end)
            except ValueError:
                raise StoreFormatError(
                    f"{path} line {lineno}: {raw_start!r} / {raw_end!r} are not dates (YYYY-MM-DD)."
                ) from None
            if end < start:
                raise StoreFormatError(
                    f"{path} line {lineno}: span of {symbol} ends {end.date()} before it starts {start.date()}."
                )
            spans.setdefault(symbol.upper(), []).append((start, end))
    for symbol_spans in spans.values():
        symbol_spans.sort()
    return spans


def write_instruments(path: Path, spans: Mapping[str, Sequence[Span]]) -> None:
    """Write ``{SYMBOL: [(start, end), ...]}`` in Qlib's layout (symbols sorted)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{symbol.upper()}\t{start:%Y-%m-%d}\t{end:%Y-%m-%d}\n"
        for symbol in sorted(spans)
        for start, end in sorted(spans[symbol])
    ]
    path.write_text("".join(lines), encoding="utf-8")


def membership_mask(dates: pd.DatetimeIndex, spans: Sequence[Sequence[Span]]) -> np.ndarray:
    """Boolean ``[dates × instruments]``: True where the date lies inside one of that instrument's spans."""
    mask = np.zeros((len(dates), len(spans)), dtype=bool, order="F")
    values = dates.values
    for col, symbol_spans in enumerate(spans):
        for start, end in symbol_spans:
            lo = np.searchsorted(values, np.datetime64(start), side="left")
            hi = np.searchsorted(values, np.datetime64(end), side="right")
            mask[lo:hi, col] = True
    return mask
