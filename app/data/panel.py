"""A block of market data as ``[dates × instruments]`` float32 arrays, one per field."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True, eq=False)
class Panel:
    """Aligned market data.

    ``values[field]`` is float32 ``[len(dates), len(instruments)]`` in column-major order (each instrument's
    series is contiguous). ``first``/``last`` give, per instrument, the row of its first/last stored day
    relative to ``dates`` (they may fall outside ``0..len(dates)-1`` when the stored series starts before or
    ends after the window). Rows outside ``first..last`` are not part of the instrument's series: they are
    NaN here only because the block is rectangular. ``member`` marks the days the instrument belongs to the
    market the panel was loaded for.
    """

    dates: pd.DatetimeIndex
    instruments: tuple[str, ...]
    values: dict[str, np.ndarray]
    first: np.ndarray
    last: np.ndarray
    member: np.ndarray

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.values)

    def stored(self) -> np.ndarray:
        """Boolean ``[dates × instruments]``: True on rows of the instrument's stored series."""
        rows = np.arange(len(self.dates))[:, None]
        return (rows >= self.first[None, :]) & (rows <= self.last[None, :])

    def columns(self, cols: slice) -> Panel:
        """The same panel restricted to the instruments in ``cols`` (views, no copies of the values)."""
        return Panel(
            self.dates,
            self.instruments[cols],
            {name: arr[:, cols] for name, arr in self.values.items()},
            self.first[cols],
            self.last[cols],
            self.member[:, cols],
        )

    def to_frame(self) -> pd.DataFrame:
        """Rows where the instrument is stored and a market member, index ``(datetime, instrument)`` sorted."""
        keep = self.stored() & self.member
        t_idx, i_idx = np.nonzero(keep)  # row-major: sorted by date, then instrument
        index = pd.MultiIndex.from_arrays(
            [self.dates[t_idx], np.asarray(self.instruments, dtype=object)[i_idx]],
            names=["datetime", "instrument"],
        )
        return pd.DataFrame({name: arr[t_idx, i_idx] for name, arr in self.values.items()}, index=index)
