"""Train/valid/test segments computed from a store: the ``auto`` split and rolling windows (Qlib's RollingGen).

Segments are ``{name: [start, end]}`` with ISO dates, both ends inclusive, always on trading days of the store's
calendar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import pandas as pd

from app.core.errors import ConfigError
from app.data.store import QlibStore

Segments = dict[str, list[str]]
AUTO_SPLIT = (0.6, 0.2, 0.2)


def auto_segments(store: QlibStore, market: str, split: Sequence[float] = AUTO_SPLIT) -> Segments:
    """Split the trading days on which ``market`` lists instruments into consecutive train/valid/test shares.

    Raises:
        ConfigError: the market spans too few days for three non-empty segments.
        UnknownMarketError: no such market.
    """
    membership = store.instruments(market)
    cal = store.calendar()
    starts = [a for spans in membership.values() for a, _ in spans]
    ends = [b for spans in membership.values() for _, b in spans]
    days = cal[(cal >= min(starts)) & (cal <= max(ends))] if starts else cal[:0]
    counts = [int(len(days) * share) for share in split]
    if len(days) < 3 or min(counts) < 1:
        raise ConfigError(
            f"data.segments=auto: market {market!r} of {store.root} spans {len(days)} trading days, too few to split "
            f"{'/'.join(str(s) for s in split)} into train/valid/test; give data.segments as dates instead"
        )
    bounds = [0, counts[0], counts[0] + counts[1], len(days)]
    names = ("train", "valid", "test")
    return {n: [_iso(days[bounds[i]]), _iso(days[bounds[i + 1] - 1])] for i, n in enumerate(names)}


def rolling_segments(
    calendar: pd.DatetimeIndex,
    segments: Mapping[str, Sequence[str]],
    *,
    step: int,
    mode: Literal["expanding", "sliding"] = "expanding",
    trunc_days: int = 0,
) -> list[Segments]:
    """Qlib's ``RollingGen``: one set of segments per window of ``step`` trading days of the test segment.

    Window k's test segment starts ``k * step`` trading days after the original test start (the last window
    ends at the original test end). Valid shifts by the same amount; train shifts too when ``mode`` is
    ``sliding`` and keeps its start when ``expanding``. Then every non-test bound is moved back to at most
    ``trunc_days`` trading days before the window's test start, so labels that look ``trunc_days`` days ahead
    stay outside the test window.

    Raises:
        ConfigError: bad step/mode/trunc_days, or segments that are not on the calendar or leave no window.
    """
    if step < 1:
        raise ConfigError(f"trainer.rolling.step: expected a whole number of trading days >= 1, got {step}")
    if mode not in ("expanding", "sliding"):
        raise ConfigError(f"trainer.rolling.mode: expected 'expanding' or 'sliding', got {mode!r}")
    if trunc_days < 0:
        raise ConfigError(f"trainer.rolling.trunc_days: expected >= 0, got {trunc_days}")
    if "test" not in segments or "train" not in segments:
        raise ConfigError(f"rolling needs train and test segments; got {', '.join(segments) or 'none'}")
    pos = {
        name: [_position(calendar, seg[0], f"data.segments.{name}", end=False),
               _position(calendar, seg[1], f"data.segments.{name}", end=True)]
        for name, seg in segments.items()
    }  # fmt: skip
    test_start, test_end = pos["test"]
    if test_start > test_end:
        raise ConfigError(f"data.segments.test {list(segments['test'])} starts after it ends")
    windows: list[Segments] = []
    for k, start in enumerate(range(test_start, test_end + 1, step)):
        shift = k * step
        out: Segments = {"test": [_iso(calendar[start]), _iso(calendar[min(start + step - 1, test_end)])]}
        for name, (lo, hi) in pos.items():
            if name == "test":
                continue
            lo = lo if name == "train" and mode == "expanding" else lo + shift
            hi = hi + shift
            limit = start - trunc_days
            lo, hi = min(lo, limit), min(hi, limit)
            if lo < 0 or hi < lo:
                raise ConfigError(
                    f"rolling window {k + 1}: segment {name} is empty after truncating {trunc_days} days before the "
                    f"test start {_iso(calendar[start])}; lengthen data.segments.{name} or lower trainer.rolling."
                    "trunc_days"
                )
            out[name] = [_iso(calendar[lo]), _iso(calendar[hi])]
        windows.append({name: out[name] for name in segments})
    return windows


def _position(calendar: pd.DatetimeIndex, date: str, key: str, *, end: bool) -> int:
    """Calendar index of a segment bound: a start moves to the next trading day, an end to the previous one."""
    ts = pd.Timestamp(date)
    if (ts > calendar[-1] and not end) or (ts < calendar[0] and end):
        span = f"{_iso(calendar[0])}..{_iso(calendar[-1])}"
        raise ConfigError(f"{key}: {date} lies outside the store's calendar {span}; move it inside the data")
    i = int(calendar.searchsorted(ts, side="right" if end else "left"))
    return i - 1 if end else i


def _iso(ts: pd.Timestamp) -> str:
    return str(ts.date())
