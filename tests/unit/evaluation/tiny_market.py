"""Hand-built stores for backtest tests: a few symbols over a few weekdays, every value chosen by the test."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from app.data.writer import write_store

START = "2020-01-06"  # a Monday
Cell = float | None


def calendar(days: int, start: str = START) -> pd.DatetimeIndex:
    return pd.bdate_range(start, periods=days)


def make_store(
    root: Path,
    closes: Mapping[str, Sequence[Cell]],
    *,
    change: Mapping[str, Mapping[int, float]] | None = None,
    factor: Mapping[str, Sequence[float]] | None = None,
    fields: Mapping[str, Mapping[str, Sequence[Cell]]] | None = None,
    bench: Sequence[float] | None = None,
    universe: Sequence[str] | None = None,
) -> pd.DatetimeIndex:
    """Write a store; ``None`` = no bar (outside the listing), NaN = suspended inside the listing.

    ``change`` defaults to close / previous stored close − 1 and can be overridden per day index;
    ``bench`` adds ``SH000300`` (default: 1000 flat). ``universe`` limits ``all.txt`` (default: every symbol).
    """
    days = len(next(iter(closes.values())))
    cal = calendar(days)
    series = dict(closes)
    series["SH000300"] = list(bench) if bench is not None else [1000.0] * days
    bars: dict[str, pd.DataFrame] = {}
    spans: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]] = {}
    for sym, values in series.items():
        rows = [i for i, v in enumerate(values) if v is not None]
        close = np.array([np.nan if values[i] is None else values[i] for i in range(days)], dtype=np.float64)
        prev = pd.Series(close).ffill().shift(1).to_numpy()
        chg = (close / prev - 1).astype(np.float32).astype(np.float64)
        for i, v in (change or {}).get(sym, {}).items():
            chg[i] = v
        frame = {"close": close, "change": chg, "factor": np.ones(days) if factor is None or sym not in factor
                 else np.asarray(factor[sym], dtype=np.float64)}  # fmt: skip
        for name, per_sym in (fields or {}).items():
            if sym in per_sym:
                frame[name] = np.array([np.nan if v is None else v for v in per_sym[sym]], dtype=np.float64)
        bars[sym] = pd.DataFrame(frame, index=cal).iloc[rows[0] : rows[-1] + 1]
        spans[sym] = [(cal[rows[0]], cal[rows[-1]])]
    members = universe if universe is not None else list(series)
    write_store(root, bars, {"all": {s: spans[s] for s in members}}, calendar=cal)
    return cal


def predictions(cal: pd.DatetimeIndex, scores: Mapping[int, Mapping[str, float]]) -> pd.Series:
    """``{day index: {symbol: score}}`` as a score Series indexed (datetime, instrument)."""
    rows = [(cal[d], sym, s) for d, per_day in scores.items() for sym, s in per_day.items()]
    frame = pd.DataFrame(rows, columns=["datetime", "instrument", "score"]).set_index(["datetime", "instrument"])
    return frame["score"].sort_index()


def f32_return(close: float, prev: float) -> float:
    """A daily benchmark return as Qlib computes it: float32 ratio, ``(r + 1) − 1`` in float32."""
    r = np.float32(close) / np.float32(prev) - np.float32(1)
    return float((r + np.float32(1)) - np.float32(1))


NAN = math.nan
