"""Read a market store in Qlib's binary layout (``calendars/``, ``instruments/``, ``features/``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from app.core.errors import DateRangeError, StoreFormatError, UnknownInstrumentError, UnknownMarketError
from app.data.binfile import read_bin
from app.data.instruments import Membership, Span, membership_mask, read_instruments
from app.data.panel import Panel

DateLike = str | pd.Timestamp | None


class QlibStore:
    """A daily market store laid out as Qlib writes it; usable on an unchanged ``~/.qlib/qlib_data/cn_data``.

    Raises (on use):
        StoreFormatError: the directory is not a store, or one of its files is malformed.
    """

    def __init__(self, root: Path | str, freq: str = "day") -> None:
        self.root = Path(root).expanduser()
        self.freq = freq
        self._calendar: pd.DatetimeIndex | None = None
        self._markets: dict[str, Membership] = {}

    def calendar(self) -> pd.DatetimeIndex:
        """Every trading day of the store, ascending."""
        if self._calendar is None:
            self._calendar = read_calendar(self.root / "calendars" / f"{self.freq}.txt")
        return self._calendar

    def markets(self) -> list[str]:
        """Names of the markets (instrument files) in the store."""
        return sorted(p.stem for p in (self.root / "instruments").glob("*.txt"))

    def instruments(self, market: str) -> Membership:
        """``{SYMBOL: [(start, end), ...]}`` for ``market``.

        Raises:
            UnknownMarketError: the store has no ``instruments/<market>.txt``.
        """
        if market not in self._markets:
            path = self.root / "instruments" / f"{market}.txt"
            if not path.is_file():
                known = ", ".join(self.markets()) or "none"
                raise UnknownMarketError(
                    f"unknown market {market!r} in store {self.root}: no {path.name} under instruments/. "
                    f"Known markets: {known}."
                )
            self._markets[market] = read_instruments(path)
        return self._markets[market]

    def fields(self, symbol: str) -> list[str]:
        """Fields stored for ``symbol`` (from its ``features/<symbol>/*.<freq>.bin`` files)."""
        suffix = f".{self.freq}.bin"
        folder = self._feature_dir(symbol)
        return sorted(p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}"))

    def read_series(self, symbol: str, field: str) -> pd.Series:
        """One field of one instrument over its stored days, indexed by date (NaN on suspended days).

        An absent field file gives an empty series, as in Qlib.
        """
        cal = self.calendar()
        path = self.feature_path(symbol, field)
        if not path.is_file():
            return pd.Series(dtype=np.float32, name=field)
        start, values = read_bin(path, len(cal))
        return pd.Series(values, index=cal[start : start + len(values)], name=field)

    def load(
        self,
        fields: Sequence[str],
        market: str | None = None,
        instruments: Iterable[str] | None = None,
        start: DateLike = None,
        end: DateLike = None,
    ) -> Panel:
        """Load ``fields`` for a market (or an explicit symbol list) over ``[start, end]`` as a :class:`Panel`.

        Pass ``market`` for membership per date, or ``instruments`` for symbols that count as members on
        every day of their stored series. ``None`` bounds mean the calendar's first/last day.

        Raises:
            UnknownMarketError, UnknownInstrumentError, DateRangeError, StoreFormatError.
        """
        cal = self.calendar()
        lo, hi = self.date_slice(start, end)
        dates = cal[lo:hi]
        symbols, spans = self._universe(market, instruments)
        n, t = len(symbols), len(dates)
        values = {f: np.full((t, n), np.nan, dtype=np.float32, order="F") for f in fields}
        first = np.full(n, np.iinfo(np.int64).max // 2, dtype=np.int64)
        last = np.full(n, np.iinfo(np.int64).min // 2, dtype=np.int64)
        for col, symbol in enumerate(symbols):
            for field in fields:
                path = self.feature_path(symbol, field)
                if not path.is_file():
                    continue
                s0, data = read_bin(path, len(cal))
                first[col] = min(first[col], s0 - lo)
                last[col] = max(last[col], s0 + len(data) - 1 - lo)
                a, b = max(s0, lo), min(s0 + len(data), hi)
                if a < b:
                    values[field][a - lo : b - lo, col] = data[a - s0 : b - s0]
        member = np.ones((t, n), dtype=bool, order="F") if spans is None else membership_mask(dates, spans)
        return Panel(dates, tuple(symbols), values, first, last, member)

    def load_frame(
        self,
        fields: Sequence[str],
        market: str | None = None,
        instruments: Iterable[str] | None = None,
        start: DateLike = None,
        end: DateLike = None,
    ) -> pd.DataFrame:
        """As :meth:`load`, as one frame indexed ``(datetime, instrument)`` on stored member days."""
        return self.load(fields, market, instruments, start, end).to_frame()

    def date_slice(self, start: DateLike, end: DateLike) -> tuple[int, int]:
        """Calendar positions ``[lo, hi)`` covering ``[start, end]``.

        Raises:
            DateRangeError: a bound lies outside the calendar, or start is after end.
        """
        cal = self.calendar()
        first, last = cal[0], cal[-1]
        s = first if start is None else _timestamp(start, "start")
        e = last if end is None else _timestamp(end, "end")
        span = f"the calendar of {self.root} runs {first.date()} .. {last.date()}"
        if s < first or s > last:
            raise DateRangeError(f"start {s.date()} is outside the calendar: {span}. Pick a start in that range.")
        if e < first or e > last:
            raise DateRangeError(f"end {e.date()} is outside the calendar: {span}. Pick an end in that range.")
        if s > e:
            raise DateRangeError(f"start {s.date()} is after end {e.date()}; swap them ({span}).")
        lo = int(cal.searchsorted(s, side="left"))
        hi = int(cal.searchsorted(e, side="right"))
        if lo >= hi:
            raise DateRangeError(f"no trading day between {s.date()} and {e.date()} ({span}).")
        return lo, hi

    def _universe(
        self, market: str | None, instruments: Iterable[str] | None
    ) -> tuple[list[str], list[list[Span]] | None]:
        if (market is None) == (instruments is None):
            raise ValueError("pass exactly one of market= or instruments=")
        if market is not None:
            membership = self.instruments(market)
            symbols = sorted(membership)
            return symbols, [membership[s] for s in symbols]
        symbols = sorted({s.upper() for s in instruments or ()})
        missing = [s for s in symbols if not self._feature_dir(s).is_dir()]
        if missing:
            raise UnknownInstrumentError(
                f"unknown instrument(s) {', '.join(missing[:10])} in store {self.root}: no features/<symbol>/ "
                "folder. Check the spelling, or list the store's symbols with `qtrain data info`."
            )
        return symbols, None

    def feature_path(self, symbol: str, field: str) -> Path:
        """Where one field of one instrument is stored: ``features/<symbol>/<field>.<freq>.bin`` (lower-case)."""
        return self._feature_dir(symbol) / f"{field.lower()}.{self.freq}.bin"

    def _feature_dir(self, symbol: str) -> Path:
        return self.root / "features" / symbol.lower()


def read_calendar(path: Path) -> pd.DatetimeIndex:
    """Parse a calendar file (one date a line, strictly increasing).

    Raises:
        StoreFormatError: the file is absent or empty, a date does not parse, or dates are not increasing.
    """
    if not path.is_file():
        raise StoreFormatError(
            f"{path} not found: {path.parent.parent} is not a market store in Qlib's layout. "
            "Create one with `qtrain data synth --to DIR` or `qtrain data import SRC --to DIR`."
        )
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    try:
        cal = pd.DatetimeIndex(pd.to_datetime(lines, format="mixed"))
    except (ValueError, TypeError) as exc:
        raise StoreFormatError(f"{path}: unreadable date in the calendar ({exc}). One YYYY-MM-DD per line.") from None
    if len(cal) == 0:
        raise StoreFormatError(f"{path}: the calendar is empty. Re-create the store.")
    if not cal.is_monotonic_increasing or cal.has_duplicates:
        bad = int(np.nonzero(np.diff(cal.values) <= np.timedelta64(0))[0][0]) + 2
        raise StoreFormatError(
            f"{path} line {bad}: calendar dates must be strictly increasing ({cal[bad - 1].date()} after "
            f"{cal[bad - 2].date()}). Re-create the store."
        )
    return cal


def _timestamp(value: str | pd.Timestamp, name: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(value)
    except ValueError:
        raise DateRangeError(f"{name} {value!r} is not a date; use YYYY-MM-DD.") from None
